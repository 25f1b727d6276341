"""Index jobs in PostgreSQL (chatapp.rag.jobs), with the pipeline behind the `Builder`
port scripted: progress reaches the row while a build runs, a job whose indexer died is
taken over once its lease runs out, and files uploaded during a build get a build of
their own after it; on PostgreSQL and on SQLite."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatapp.config import DatabaseSettings, RagSettings
from chatapp.db.engine import make_engine, make_sessionmaker
from chatapp.db.models import KnowledgeBase, User
from chatapp.rag.documents import content_hash
from chatapp.rag.jobs import BuildOutcome, BuildProgress, IndexJobRunner, Job
from chatapp.rag.library import KnowledgeLibrary
from tests.conftest import fresh_database


class ScriptedBuild:
    """A build that reports progress, then waits until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.jobs: list[Job] = []

    def __call__(self, job: Job, progress: Callable[[BuildProgress], None]) -> BuildOutcome:
        self.jobs.append(job)
        files = {p.name: content_hash(p.read_bytes()) for p in Path(job.sources[0]).iterdir()}
        names = sorted(files)
        progress(BuildProgress("embedding", len(names), len(names), 10, 4))
        self.started.set()
        assert self.release.wait(30), "never released"
        return BuildOutcome(
            version=len(self.jobs), documents=len(names), chunks=10, index_kind="flat",
            sources=files,
        )  # fmt: skip


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database of each test's own (the `postgresql` case of `db_settings`): an indexer
    claims any job in its database, and the session's test apps run indexers on the
    shared one, which would take these jobs from the runners under test."""
    with fresh_database() as url:
        yield url


@pytest.fixture
async def env(db_settings: DatabaseSettings, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A user's knowledge base on each backend (SQLite is `make run`'s default), migrated."""
    engine = make_engine(db_settings)
    sessions = make_sessionmaker(engine)
    rag = RagSettings(
        index_dir=tmp_path / "indexes",
        upload_dir=tmp_path / "uploads",
        indexer_poll_s=0.05,
        indexer_lease_s=0.6,
    )
    async with sessions() as session:
        user = User(email=f"jobs-{uuid.uuid4().hex[:8]}@example.com", password_hash="x")
        session.add(user)
        await session.commit()
        library = KnowledgeLibrary(rag=rag, retriever=None)
        kb = (await library.create(session=session, user_id=user.id, name="Jobs")).id
    yield {"sessions": sessions, "rag": rag, "user": user.id, "kb": kb, "library": library}
    await engine.dispose()


async def upload(env: dict[str, Any], name: str) -> None:
    async with env["sessions"]() as session:
        await env["library"].upload(
            session=session,
            user_id=env["user"],
            kb=env["kb"],
            files=[(name, b"# " + name.encode())],
        )


async def row(env: dict[str, Any]) -> KnowledgeBase:
    async with env["sessions"]() as session:
        found = await session.get(KnowledgeBase, env["kb"])
        assert found is not None
        return found


async def public(env: dict[str, Any]) -> Any:
    async with env["sessions"]() as session:
        return await env["library"].get(session=session, user_id=env["user"], kb=env["kb"])


async def until(check: Callable[[], Any], what: str) -> None:
    for _ in range(600):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what}: not within 12 s")


async def test_a_dead_indexers_job_is_taken_over_after_its_lease(env: dict[str, Any]) -> None:
    await upload(env, "a.md")
    first, second = ScriptedBuild(), ScriptedBuild()
    second.release.set()
    runner = IndexJobRunner(sessionmaker=env["sessions"], rag=env["rag"], build=first)
    dying = asyncio.create_task(runner.run_once())
    await asyncio.to_thread(first.started.wait, 10)

    async def progress_shown() -> bool:
        job = (await public(env)).job
        return job is not None and job.phase == "embedding" and job.chunks_done == 4

    await until(progress_shown, "progress on the row")
    shown = await public(env)
    assert shown.status == "indexing" and shown.job.status == "running"
    assert shown.job.percent == 10 + int(85 * 4 / 10) and shown.job.files_total == 1

    # another indexer finds nothing to take while the first renews its lease
    other = IndexJobRunner(sessionmaker=env["sessions"], rag=env["rag"], build=second)
    assert await other.run_once() is False
    dying.cancel()  # the first indexer dies mid-build: its lease is no longer renewed
    await until(other.run_once, "the job taken over")
    first.release.set()
    done = await public(env)
    assert done.status == "ready" and done.version == 1 and done.job.status == "done"
    assert done.job.percent == 100 and [j.generation for j in second.jobs] == [1]


async def test_files_uploaded_during_a_build_get_a_build_after_it(env: dict[str, Any]) -> None:
    await upload(env, "a.md")
    build = ScriptedBuild()
    built: list[tuple[str, int | None]] = []
    runner = IndexJobRunner(
        sessionmaker=env["sessions"],
        rag=env["rag"],
        build=build,
        on_built=lambda kb, version: built.append((kb, version)),
    )
    running = asyncio.create_task(runner.run_once())
    await asyncio.to_thread(build.started.wait, 10)
    await upload(env, "b.md")  # while a.md is being built
    build.release.set()
    assert await running is True
    after = await public(env)
    assert after.status == "queued" and after.version == 1  # version 1 serves meanwhile
    files = {f.name: f.status for f in await _files(env)}
    assert files == {"a.md": "indexed", "b.md": "pending"}
    assert await runner.run_once() is True
    assert [j.generation for j in build.jobs] == [1, 2]
    assert (await public(env)).version == 2
    assert {f.name: f.status for f in await _files(env)} == {"a.md": "indexed", "b.md": "indexed"}
    assert built == [(env["kb"], 1), (env["kb"], 2)]
    assert await runner.run_once() is False  # nothing left


async def _files(env: dict[str, Any]) -> Any:
    async with env["sessions"]() as session:
        return await env["library"].files(session=session, user_id=env["user"], kb=env["kb"])


async def test_deleted_accounts_knowledge_bases_are_swept_from_disk(env: dict[str, Any]) -> None:
    """Deleting an account deletes its knowledge bases' rows (cascade); the indexer's
    sweep then deletes their files and index versions, and nothing of anyone else's."""
    await upload(env, "a.md")
    runner = IndexJobRunner(sessionmaker=env["sessions"], rag=env["rag"], build=ScriptedBuild())
    kb, rag = env["kb"], env["rag"]
    index = rag.index_dir / kb / "v000001"
    index.mkdir(parents=True)
    (index / "manifest.json").write_text("{}")
    shared = rag.index_dir / "handbook" / "v000001"  # a shared one: never swept
    shared.mkdir(parents=True)
    (shared / "manifest.json").write_text("{}")
    assert await runner.sweep() == []  # its row exists
    assert (rag.upload_dir / kb / "a.md").is_file()

    async with env["sessions"]() as session:
        user = await session.get(User, env["user"])
        await session.delete(user)
        await session.commit()
    assert await runner.sweep() == [kb]
    assert not (rag.upload_dir / kb).exists() and not (rag.index_dir / kb).exists()
    assert shared.is_dir()


async def test_files_the_indexer_cannot_see_fail_the_job_instead_of_emptying_it(
    env: dict[str, Any],
) -> None:
    """An indexer on a node without the upload volume must not index nothing and call
    it done: the job fails, saying where it looked, and the files stay pending."""
    await upload(env, "a.md")
    for path in (env["rag"].upload_dir / env["kb"]).iterdir():
        path.unlink()  # as this indexer sees it: recorded, but not there
    build = ScriptedBuild()
    runner = IndexJobRunner(sessionmaker=env["sessions"], rag=env["rag"], build=build)
    assert await runner.run_once() is True
    shown = await public(env)
    assert shown.status == "failed" and shown.job.status == "failed"
    assert "RAG_UPLOAD_DIR" in shown.job.error and str(env["rag"].upload_dir) in shown.job.error
    assert build.jobs == [] and [f.status for f in await _files(env)] == ["pending"]
