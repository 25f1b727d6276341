"""Export, import and share links over HTTP on the running app (issue 14), with the
real SmolLM2 model: exports imported and exported again are the same apart from ids,
ChatGPT's export imports by upload, bad or oversized files store nothing, and a share
link shows exactly its snapshot, nothing of its owner, until it is revoked or its
conversation deleted."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import expect_error, register_and_login
from tests.fakes.chatgpt_export import branched_sample


@pytest.fixture
def http(chat_app: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chat_app, timeout=120) as client:
        yield client


def _user(chat_app: str) -> dict[str, str]:
    return register_and_login(chat_app)


def _conversation(http: httpx.Client, auth: dict[str, str], title: str, *turns: str) -> str:
    created = http.post("/api/conversations", json={"title": title}, headers=auth)
    assert created.status_code == 201, created.text
    cid = str(created.json()["id"])
    for text in turns:
        turn = http.post(
            f"/api/conversations/{cid}/messages",
            json={"content": text, "stream": False, "rag": "off", "max_tokens": 6},
            headers=auth,
        )
        assert turn.status_code == 200, turn.text
    return cid


def _ids_dropped(conversations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            **{k: v for k, v in c.items() if k != "id"},
            "messages": [{k: v for k, v in m.items() if k != "id"} for m in c["messages"]],
        }
        for c in conversations
    ]


def _titles(http: httpx.Client, auth: dict[str, str]) -> list[str]:
    page = http.get("/api/conversations", params={"limit": 100}, headers=auth)
    assert page.status_code == 200, page.text
    return [c["title"] for c in page.json()["items"]]


def test_export_import_round_trip_over_http(http: httpx.Client, chat_app: str) -> None:
    alice, bob = _user(chat_app), _user(chat_app)
    cid = _conversation(http, alice, "Quokka chat", "alice-marker: say hi")
    _conversation(http, alice, "Empty one")

    one = http.get(f"/api/conversations/{cid}/export", headers=alice)
    assert one.status_code == 200, one.text
    assert one.headers["content-type"].startswith("application/json")
    assert one.headers["content-disposition"].startswith("attachment; filename=")
    assert one.headers["cache-control"] == "no-store"
    document = one.json()
    assert (document["format"], document["version"]) == ("chatapp-conversations", 1)
    (conversation,) = document["conversations"]
    detail = http.get(f"/api/conversations/{cid}", headers=alice).json()
    assert conversation["title"] == "Quokka chat" and conversation["id"] == cid
    assert [(m["id"], m["role"], m["content"], m["model"]) for m in conversation["messages"]] == [
        (m["id"], m["role"], m["content"], m["model"]) for m in detail["messages"]
    ]
    assert conversation["messages"][1]["completion_tokens"] > 0

    everything = http.get("/api/me/conversations/export", headers=alice)
    assert everything.status_code == 200, everything.text
    assert [c["title"] for c in everything.json()["conversations"]] == ["Empty one", "Quokka chat"]

    # Bob imports Alice's file (multipart upload, as the page sends it): new conversations
    imported = http.post(
        "/api/conversations/import",
        files={"file": ("chatapp.json", everything.content, "application/json")},
        headers=bob,
    )
    assert imported.status_code == 201, imported.text
    result = imported.json()
    assert result["messages"] == 2
    assert [(c["title"], c["messages"]) for c in result["conversations"]] == [
        ("Empty one", 0),
        ("Quokka chat", 2),
    ]
    assert cid not in {c["id"] for c in result["conversations"]}
    again = http.get("/api/me/conversations/export", headers=bob).json()
    assert _ids_dropped(again["conversations"]) == _ids_dropped(everything.json()["conversations"])
    old_ids = {m["id"] for c in everything.json()["conversations"] for m in c["messages"]}
    assert not old_ids & {m["id"] for c in again["conversations"] for m in c["messages"]}
    # Alice's conversations are untouched, and still only hers
    assert sorted(_titles(http, alice)) == ["Empty one", "Quokka chat"]
    assert http.get(f"/api/conversations/{cid}", headers=bob).status_code == 404

    # the same file as a JSON body imports too
    body = http.post(
        "/api/conversations/import",
        content=one.content,
        headers={**bob, "Content-Type": "application/json"},
    )
    assert body.status_code == 201, body.text
    assert _titles(http, bob).count("Quokka chat") == 2


def test_markdown_export(http: httpx.Client, chat_app: str) -> None:
    alice = _user(chat_app)
    cid = _conversation(http, alice, "Markdown chat", "alice-marker: say hi")
    response = http.get(
        f"/api/conversations/{cid}/export", params={"format": "markdown"}, headers=alice
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/markdown")
    assert response.headers["content-disposition"].endswith('.md"')
    text = response.text
    reply = http.get(f"/api/conversations/{cid}", headers=alice).json()["messages"][1]
    assert text.startswith("# Markdown chat\n")
    assert "**User** · " in text and "alice-marker: say hi" in text
    assert f"**Assistant** ({reply['model']}) · " in text and reply["content"].strip() in text
    bad = http.get(f"/api/conversations/{cid}/export", params={"format": "pdf"}, headers=alice)
    expect_error(bad, 422)


def test_a_chatgpt_export_is_imported_by_upload(http: httpx.Client, chat_app: str) -> None:
    carol = _user(chat_app)
    response = http.post(
        "/api/conversations/import",
        files={"file": ("conversations.json", json.dumps(branched_sample()), "application/json")},
        headers=carol,
    )
    assert response.status_code == 201, response.text
    quokkas = response.json()["conversations"][0]
    detail = http.get(f"/api/conversations/{quokkas['id']}", headers=carol).json()
    assert detail["title"] == "Quokka facts"
    assert [(m["seq"], m["role"], m["content"]) for m in detail["messages"]] == [
        (0, "user", "Where do quokkas live?"),
        (1, "assistant", "On Rottnest Island\nand Bald Island."),
        (2, "user", "What is in this photo?"),
        (3, "assistant", "A quokka, smiling."),
    ]
    assert detail["messages"][0]["created_at"].startswith("2023-11-14T22:13:30")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"not json at all", "not JSON"),
        (b'{"hello": "world"}', "expected ChatApp's conversations JSON"),
        (
            json.dumps([*branched_sample(), {"mapping": {}, "current_node": "x"}]).encode(),
            "[2].mapping: node 'x'",
        ),
    ],
)
def test_a_bad_file_is_refused_and_stores_nothing(
    http: httpx.Client, chat_app: str, content: bytes, says: str
) -> None:
    dave = _user(chat_app)
    response = http.post(
        "/api/conversations/import", files={"file": ("x.json", content)}, headers=dave
    )
    assert says in expect_error(response, 422)["message"]
    assert _titles(http, dave) == []
    no_file = http.post(
        "/api/conversations/import", files={"other": ("x.json", content)}, headers=dave
    )
    assert "field named `file`" in expect_error(no_file, 422)["message"]


def test_an_oversized_import_is_refused_with_its_limit(http: httpx.Client, chat_app: str) -> None:
    erin = _user(chat_app)
    stamp = "2026-01-01T00:00:00Z"
    many = {
        "format": "chatapp-conversations",
        "version": 1,
        "conversations": [{"created_at": stamp, "updated_at": stamp}] * 1001,
    }
    # larger than the app's 64 KiB body limit: the import route takes whole export files
    content = json.dumps(many).encode()
    assert len(content) > 64 * 1024
    response = http.post(
        "/api/conversations/import",
        content=content,
        headers={**erin, "Content-Type": "application/json"},
    )
    assert "at most 1000" in expect_error(response, 413)["message"]
    assert _titles(http, erin) == []


def test_someone_elses_conversation_cannot_be_exported_or_shared(
    http: httpx.Client, chat_app: str
) -> None:
    alice, mallory = _user(chat_app), _user(chat_app)
    cid = _conversation(http, alice, "Private")
    share = http.post(f"/api/conversations/{cid}/shares", headers=alice).json()
    for method, path in [
        ("GET", f"/api/conversations/{cid}/export"),
        ("GET", f"/api/conversations/{cid}/export?format=markdown"),
        ("POST", f"/api/conversations/{cid}/shares"),
        ("GET", f"/api/conversations/{cid}/shares"),
        ("DELETE", f"/api/shares/{share['id']}"),
        ("GET", f"/api/conversations/{uuid.uuid4()}/export"),
    ]:
        expect_error(http.request(method, path, headers=mallory), 404)
    assert http.get(share["path"]).status_code == 200  # Mallory's DELETE changed nothing
    assert "Private" not in http.get("/api/me/conversations/export", headers=mallory).text


def test_a_share_link_shows_exactly_its_snapshot_until_revoked(
    http: httpx.Client, chat_app: str
) -> None:
    alice = _user(chat_app)
    me = http.get("/api/me", headers=alice).json()
    cid = _conversation(http, alice, "Shared chat", "alice-marker: say hi")
    before = http.get(f"/api/conversations/{cid}", headers=alice).json()["messages"]

    created = http.post(f"/api/conversations/{cid}/shares", headers=alice)
    assert created.status_code == 201, created.text
    share = created.json()
    assert share["token"].startswith("chs_") and share["path"] == f"/api/shares/{share['token']}"
    later = http.post(
        f"/api/conversations/{cid}/messages",
        json={"content": "a later secret question", "stream": False, "rag": "off", "max_tokens": 4},
        headers=alice,
    )
    assert later.status_code == 200, later.text

    shown = http.get(share["path"])  # no login
    assert shown.status_code == 200, shown.text
    assert shown.headers["cache-control"] == "no-store"
    assert shown.headers["referrer-policy"] == "no-referrer"
    snapshot = shown.json()
    assert set(snapshot) == {"title", "shared_at", "messages"}
    assert snapshot["title"] == "Shared chat"
    assert [
        (m["role"], m["content"], m["created_at"], m["model"], m["sources"])
        for m in snapshot["messages"]
    ] == [(m["role"], m["content"], m["created_at"], m["model"], m["sources"]) for m in before]
    text = shown.text
    for foreign in (me["id"], me["email"], cid, *(m["id"] for m in before), "a later secret"):
        assert foreign not in text
    for field in ("prompt_tokens", "cost_usd", "user_id", "email", '"id"'):
        assert field not in text

    listed = http.get(f"/api/conversations/{cid}/shares", headers=alice).json()
    assert [(s["id"], s["message_count"], s["prefix"]) for s in listed] == [
        (share["id"], 2, share["token"][:12])
    ]
    assert share["token"] not in json.dumps(listed)

    assert http.delete(f"/api/shares/{share['id']}", headers=alice).status_code == 204
    assert "revoked" in expect_error(http.get(share["path"]), 404)["message"]
    assert http.get(f"/api/conversations/{cid}/shares", headers=alice).json() == []
    expect_error(http.get("/api/shares/chs_guessed-token"), 404)


def test_deleting_the_conversation_kills_its_link(http: httpx.Client, chat_app: str) -> None:
    alice = _user(chat_app)
    cid = _conversation(http, alice, "Short-lived")
    path = http.post(f"/api/conversations/{cid}/shares", headers=alice).json()["path"]
    assert http.get(path).status_code == 200
    assert http.delete(f"/api/conversations/{cid}", headers=alice).status_code == 204
    expect_error(http.get(path), 404)
