"""Knowledge bases users own (issue 14), through ChatApp on Serve: upload → background
index job (the real Ray Data pipeline, real FAISS) → progress → chat with sources from
the uploaded file; privacy (another user gets 404 everywhere, read-only sharing);
quotas checked before anything is stored; zips; deleting files and knowledge bases;
an admin's build of a shared knowledge base."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray import serve
from sqlalchemy import update

from actors.client import kill_shards
from chatapp.config import DatabaseSettings, Settings
from chatapp.db.engine import make_engine, make_sessionmaker
from chatapp.db.models import User
from deployments.app import build_app
from tests.conftest import expect_error, fresh_database, register_and_login, run_app
from tests.fakes.corpus import make_pdf
from tests.integration.accounts import PASSWORD
from tests.integration.sse import iter_events

PREFIX = "/kbapp"
RUNBOOK = """# Zephyr runbook

## Backups

The Zephyr cluster's nightly backup window opens at 03:15 UTC and lasts forty minutes.
Never restart the primary during the backup window.

## Paging

Page the on-call engineer through the orange phone tree after two failed health checks.
"""
LIMITS = {"max_file_bytes": 20_000, "user_quota_bytes": 60_000, "max_files": 5}


@pytest.fixture(scope="module")
def kb_app(chat_app: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """ChatApp with users' knowledge bases, small limits, no default knowledge base, and a
    database of its own: index jobs are claimed from the database, and another app's
    indexer (other folders) must not take this one's."""
    with fresh_database() as pg_url:
        yield from _kb_app(chat_app, pg_url, tmp_path_factory.mktemp("kb"))


def _kb_app(chat_app: str, pg_url: str, root: Path) -> Iterator[dict[str, Any]]:
    rag = {
        "index_dir": str(root / "indexes"),
        "upload_dir": str(root / "uploads"),
        "default_kb": "none-here",
        "chunk_tokens": 64,
        "chunk_overlap": 8,
        "reload_interval_s": 0.3,
        "indexer_poll_s": 0.2,
        "user_max_knowledge_bases": 3,
        "min_replicas": 1,
        "max_replicas": 1,
        **LIMITS,
    }
    overrides = {
        "database": {"url": pg_url},
        "llm": {"engine": "simulated", "simulated_reply_tokens": 4},
        "shards": {"count": 1, "name_prefix": f"kb-{uuid.uuid4().hex[:6]}"},
        "rag": rag,
    }
    url = run_app(build_app(overrides), name="kbapp", route_prefix=PREFIX, base_url=chat_app)
    yield {"url": url, "root": root, "pg_url": pg_url}
    serve.delete("kbapp")
    kill_shards(Settings.from_overrides(overrides))


def user_client(kb_app: dict[str, Any], address: str | None = None) -> httpx.Client:
    headers = register_and_login(kb_app["url"], email=address)
    return httpx.Client(base_url=kb_app["url"], timeout=120, headers=headers)


@pytest.fixture
def alice(kb_app: dict[str, Any]) -> Iterator[httpx.Client]:
    with user_client(kb_app) as client:
        yield client


@pytest.fixture
def bob_email() -> str:
    return f"bob-{uuid.uuid4().hex[:8]}@example.com"


@pytest.fixture
def bob(kb_app: dict[str, Any], bob_email: str) -> Iterator[httpx.Client]:
    with user_client(kb_app, bob_email) as client:
        yield client


def create(client: httpx.Client, name: str) -> str:
    created = client.post("/api/knowledge-bases", json={"name": name})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["access"] == "owner" and body["status"] == "empty" and body["version"] is None
    return str(body["id"])


def upload(client: httpx.Client, kb: str, *files: tuple[str, bytes]) -> httpx.Response:
    return client.post(
        f"/api/knowledge-bases/{kb}/files",
        files=[("files", (name, data, "application/octet-stream")) for name, data in files],
    )


def wait_ready(client: httpx.Client, kb: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The knowledge base once its job is done, and every job state seen on the way."""
    seen = []
    deadline = time.monotonic() + 180
    while True:
        body = client.get(f"/api/knowledge-bases/{kb}").json()
        seen.append(body["job"])
        if body["job"]["status"] in ("done", "failed"):
            return body, seen
        assert time.monotonic() < deadline, f"no index after 180 s: {body}"
        time.sleep(0.1)


def ask(client: httpx.Client, kb: str, question: str) -> httpx.Response:
    conv = client.post("/api/conversations", json={}).json()["id"]
    return client.post(
        f"/api/conversations/{conv}/messages",
        json={"content": question, "knowledge_base_id": kb, "stream": False},
    )


def test_upload_is_indexed_in_the_background_with_progress_and_answers_cite_it(
    alice: httpx.Client, kb_app: dict[str, Any]
) -> None:
    kb = create(alice, "Ops notes")
    sent = upload(
        alice,
        kb,
        ("runbook.md", RUNBOOK.encode()),
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf"),
        ("tool.exe", b"MZ\x90\x00"),
    )
    assert sent.status_code == 202, sent.text
    result = sent.json()
    assert sorted(f["name"] for f in result["files"]) == ["broken.pdf", "runbook.md"]
    assert all(f["status"] == "pending" for f in result["files"])
    assert [r["name"] for r in result["rejected"]] == ["tool.exe"]
    assert "unsupported file type" in result["rejected"][0]["error"]
    assert result["knowledge_base"]["status"] in ("queued", "indexing")

    body, seen = wait_ready(alice, kb)
    job = body["job"]
    assert job["status"] == "done" and job["percent"] == 100, job
    assert job["files_total"] == job["files_done"] == 2
    assert job["chunks_total"] == job["chunks_done"] > 0
    percents = [s["percent"] for s in seen]
    assert percents == sorted(percents), percents  # progress never goes back
    assert body["status"] == "ready" and body["version"] == 1
    assert body["documents"] == 1 and body["chunks"] == job["chunks_done"]
    assert body["bytes"] == len(RUNBOOK.encode()) + len(b"%PDF-1.4 this is not really a pdf")

    files = {f["name"]: f for f in alice.get(f"/api/knowledge-bases/{kb}/files").json()["items"]}
    assert files["runbook.md"]["status"] == "indexed" and files["runbook.md"]["error"] is None
    assert files["broken.pdf"]["status"] == "error"
    assert "broken.pdf: not a readable PDF" in files["broken.pdf"]["error"]

    hits = alice.post(
        f"/api/knowledge-bases/{kb}/search", json={"query": "When is the backup window?"}
    ).json()["items"]
    assert hits[0]["source"] == "runbook.md" and "03:15 UTC" in hits[0]["text"]

    reply = ask(alice, kb, "When does the Zephyr backup window open?")
    assert reply.status_code == 200, reply.text
    sources = reply.json()["message"]["sources"]
    assert sources and sources[0]["source"] == "runbook.md#backups"
    assert sources[0]["knowledge_base"] == kb and "03:15 UTC" in sources[0]["snippet"]

    # a streamed turn too: the sources arrive with the answer
    conv = alice.post("/api/conversations", json={}).json()["id"]
    with alice.stream(
        "POST",
        f"/api/conversations/{conv}/messages",
        json={"content": "How do I page the on-call engineer?", "knowledge_base_id": kb},
    ) as streamed:
        events = list(iter_events(streamed))
    assert events[-1].event == "done"
    assert events[-1].json()["sources"][0]["source"] == "runbook.md#paging"

    listed = alice.get("/api/knowledge-bases").json()["items"]
    assert [k["name"] for k in listed if k["id"] == kb] == ["Ops notes"]


def test_a_knowledge_base_is_private_until_shared_and_then_read_only(
    alice: httpx.Client, bob: httpx.Client, bob_email: str
) -> None:
    kb = create(alice, "Private")
    assert upload(alice, kb, ("runbook.md", RUNBOOK.encode())).status_code == 202
    wait_ready(alice, kb)

    def bob_is_locked_out() -> None:
        assert kb not in [k["id"] for k in bob.get("/api/knowledge-bases").json()["items"]]
        for method, path, body in [
            ("GET", f"/api/knowledge-bases/{kb}", None),
            ("GET", f"/api/knowledge-bases/{kb}/files", None),
            ("POST", f"/api/knowledge-bases/{kb}/search", {"query": "backup window"}),
        ]:
            expect_error(bob.request(method, path, json=body), 404)
        conv = bob.post("/api/conversations", json={}).json()["id"]
        refused = bob.post(
            f"/api/conversations/{conv}/messages",
            json={"content": "backup window?", "knowledge_base_id": kb, "stream": False},
        )
        assert "not found" in expect_error(refused, 404)["message"]
        assert bob.get(f"/api/conversations/{conv}").json()["messages"] == []  # nothing stored

    bob_is_locked_out()

    # changing it is 404 too, shared or not
    def bob_cannot_change_it() -> None:
        expect_error(upload(bob, kb, ("x.md", b"# x\n\nplanted")), 404)
        expect_error(bob.delete(f"/api/knowledge-bases/{kb}"), 404)
        expect_error(bob.delete(f"/api/knowledge-bases/{kb}/files/runbook.md"), 404)
        expect_error(bob.patch(f"/api/knowledge-bases/{kb}", json={"name": "mine"}), 404)
        expect_error(bob.get(f"/api/knowledge-bases/{kb}/readers"), 404)
        expect_error(bob.post(f"/api/knowledge-bases/{kb}/readers", json={"email": "a@b.c"}), 404)

    bob_cannot_change_it()

    shared = alice.post(f"/api/knowledge-bases/{kb}/readers", json={"email": bob_email.upper()})
    assert shared.status_code == 201, shared.text
    assert [
        r["email"] for r in alice.get(f"/api/knowledge-bases/{kb}/readers").json()["items"]
    ] == [bob_email]
    mine = next(k for k in bob.get("/api/knowledge-bases").json()["items"] if k["id"] == kb)
    assert mine["access"] == "reader" and mine["owner"] and mine["status"] == "ready"
    reply = ask(bob, kb, "When does the Zephyr backup window open?")
    assert reply.status_code == 200, reply.text
    assert reply.json()["message"]["sources"][0]["source"] == "runbook.md#backups"
    bob_cannot_change_it()
    assert alice.get(f"/api/knowledge-bases/{kb}").json()["name"] == "Private"

    expect_error(alice.post(f"/api/knowledge-bases/{kb}/readers", json={"email": "no@one.x"}), 404)
    assert alice.delete(f"/api/knowledge-bases/{kb}/readers/{bob_email}").status_code == 204
    bob_is_locked_out()


def test_limits_are_checked_before_anything_is_stored(
    alice: httpx.Client, kb_app: dict[str, Any]
) -> None:
    kb = create(alice, "Limits")
    big = b"# big\n\n" + b"word " * 5000  # over the 20,000-byte file limit
    error = expect_error(upload(alice, kb, ("big.md", big)), 413)
    assert "big.md" in error["message"] and "RAG_MAX_FILE_BYTES" in error["message"]
    # a zip whose member is over the limit once unpacked, whatever the zip's own size
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("huge.txt", b"a" * 50_000)
    assert len(packed.getvalue()) < 20_000
    expect_error(upload(alice, kb, ("small.zip", packed.getvalue())), 413)

    # the user's total: three files of 15,000 bytes fit, a fifth (75,000 > 60,000) does not
    part = b"# part\n\n" + b"x" * 14_990
    assert upload(alice, kb, ("a.md", part), ("b.md", part)).status_code == 202
    other = create(alice, "Limits 2")
    assert upload(alice, other, ("c.md", part), ("d.md", part)).status_code == 202
    over = expect_error(upload(alice, other, ("e.md", part)), 413)
    assert "quota" in over["message"] and "RAG_USER_QUOTA_BYTES" in over["message"]
    # replacing a file counts its new size only
    assert upload(alice, other, ("d.md", b"# d\n\nsmaller now")).status_code == 202

    names = [f["name"] for f in alice.get(f"/api/knowledge-bases/{other}/files").json()["items"]]
    assert names == ["c.md", "d.md"]  # nothing of the refused uploads was kept
    assert not (Path(kb_app["root"]) / "uploads" / other / "e.md").exists()

    files = [(f"n{i}.txt", b"note %d" % i) for i in range(4)]  # 2 + 4 > RAG_MAX_FILES=5
    assert "RAG_MAX_FILES" in expect_error(upload(alice, kb, *files), 422)["message"]
    create(alice, "Third")
    refused = alice.post("/api/knowledge-bases", json={"name": "Fourth"})
    assert "RAG_USER_MAX_KNOWLEDGE_BASES=3" in expect_error(refused, 422)["message"]
    expect_error(alice.post("/api/knowledge-bases", json={"name": "   "}), 422)
    expect_error(upload(alice, kb, ("x.exe", b"MZ")), 422)  # nothing acceptable


def test_zips_are_unpacked_safely_and_deleting_removes_files_and_index(
    alice: httpx.Client, kb_app: dict[str, Any]
) -> None:
    kb = create(alice, "Zipped")
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as z:
        z.writestr("guide/backups.md", RUNBOOK)
        z.writestr("guide/compost.pdf", make_pdf(["Turn the compost heap every two weeks."]))
        z.writestr("../escape.md", "# escaped\n\nwritten outside the folder")
        z.writestr("inner.zip", b"PK\x05\x06" + b"\x00" * 18)
        z.writestr("__MACOSX/guide/._backups.md", b"resource fork")
    sent = upload(alice, kb, ("bundle.zip", packed.getvalue()))
    assert sent.status_code == 202, sent.text
    assert sorted(f["name"] for f in sent.json()["files"]) == [
        "guide/backups.md",
        "guide/compost.pdf",
    ]
    rejected = {r["name"]: r["error"] for r in sent.json()["rejected"]}
    assert set(rejected) == {"bundle.zip/../escape.md", "inner.zip"}
    root = Path(kb_app["root"])
    assert not (root / "uploads" / "escape.md").exists()
    assert not (root / "escape.md").exists()
    body, _ = wait_ready(alice, kb)
    assert body["job"]["status"] == "done", body
    found = alice.post(
        f"/api/knowledge-bases/{kb}/search", json={"query": "How often to turn compost?"}
    )
    assert found.status_code == 200, found.text
    assert found.json()["items"][0]["source"] == "guide/compost.pdf"

    # deleting a file rebuilds the index without it
    removed = alice.delete(f"/api/knowledge-bases/{kb}/files/guide/compost.pdf")
    assert removed.status_code == 202, removed.text
    body, _ = wait_ready(alice, kb)
    assert body["version"] == 2 and body["documents"] == 1
    hits = alice.post(
        f"/api/knowledge-bases/{kb}/search", json={"query": "How often to turn compost?"}
    ).json()["items"]
    assert all(h["source"] != "guide/compost.pdf" for h in hits)

    assert (root / "indexes" / kb).is_dir() and (root / "uploads" / kb).is_dir()
    assert alice.delete(f"/api/knowledge-bases/{kb}").status_code == 204
    assert not (root / "indexes" / kb).exists()  # every version
    assert not (root / "uploads" / kb).exists()
    expect_error(alice.get(f"/api/knowledge-bases/{kb}"), 404)
    refused = ask(alice, kb, "backup window?")
    expect_error(refused, 404)


def test_admins_build_shared_knowledge_bases_in_the_background(
    alice: httpx.Client, kb_app: dict[str, Any]
) -> None:
    folder = Path(kb_app["root"]) / "handbook"
    folder.mkdir()
    (folder / "runbook.md").write_text(RUNBOOK)
    body = {"name": "handbook", "sources": [str(folder)]}
    assert expect_error(alice.post("/api/admin/knowledge-bases", json=body), 403)

    address = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=kb_app["url"], timeout=60) as anon:
        created = anon.post("/api/auth/register", json={"email": address, "password": PASSWORD})
        assert created.status_code == 201, created.text
    asyncio.run(_make_admin(kb_app["pg_url"], address))
    with user_client_existing(kb_app, address) as admin:
        missing = {"name": "handbook", "sources": [str(folder / "nope")]}
        assert (
            "no such file"
            in expect_error(admin.post("/api/admin/knowledge-bases", json=missing), 422)["message"]
        )
        queued = admin.post("/api/admin/knowledge-bases", json=body)
        assert queued.status_code == 202, queued.text
        assert queued.json()["access"] == "shared"
        assert queued.json()["job"]["status"] in ("queued", "running")
        done, _ = wait_ready(admin, "handbook")
        assert done["job"]["status"] == "done" and done["version"] == 1
    # everyone reads it
    listed = {k["id"]: k for k in alice.get("/api/knowledge-bases").json()["items"]}
    assert listed["handbook"]["access"] == "shared" and listed["handbook"]["version"] == 1
    reply = ask(alice, "handbook", "When does the Zephyr backup window open?")
    assert reply.status_code == 200, reply.text
    assert reply.json()["message"]["sources"][0]["source"].endswith("runbook.md#backups")


async def _make_admin(pg_url: str, address: str) -> None:
    engine = make_engine(DatabaseSettings(url=pg_url))
    try:
        async with make_sessionmaker(engine)() as session:
            await session.execute(update(User).where(User.email == address).values(role="admin"))
            await session.commit()
    finally:
        await engine.dispose()


def user_client_existing(kb_app: dict[str, Any], address: str) -> httpx.Client:
    with httpx.Client(base_url=kb_app["url"], timeout=60) as anon:
        token = anon.post("/api/auth/token", data={"username": address, "password": PASSWORD})
        assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    return httpx.Client(base_url=kb_app["url"], timeout=120, headers=headers)
