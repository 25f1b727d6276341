"""Index jobs: knowledge bases built in the background, their state in PostgreSQL.

A knowledge base's row says which build was asked for last (`requested`, bumped by each
upload, file deletion or admin build) and which one is done (`built`). An indexer
claims a row with `requested > built` whose lease is free (`FOR UPDATE SKIP LOCKED`, so
indexers never take the same one), builds it with the `Builder` port (the Ray Data
pipeline), writes its progress to the row as it goes and renews its lease; a job whose
indexer died is taken over once its lease runs out. Uploads during a build ask for
another one, which follows. A build failing as a whole is recorded on the row (the
version before it keeps serving); a file that cannot be read fails alone, recorded on
its file row, and the rest are indexed.

    queued ─▶ running: reading ─▶ embedding ─▶ writing ─▶ done | failed
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatapp.config import RagSettings
from chatapp.db.models import KnowledgeBase, KnowledgeFile, utcnow
from chatapp.rag.documents import NoDocuments
from chatapp.rag.schemas import IndexJobPublic, JobPhase
from chatapp.rag.store import is_user_kb, store_for
from chatapp.rag.uploads import UploadStore

logger = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 300.0
# how much of a job's percent each phase is worth (reading, embedding, writing)
_READ, _EMBED = 10, 85


@dataclass(frozen=True, slots=True)
class BuildProgress:
    """How far a build is: what the pipeline reports as it goes."""

    phase: JobPhase
    files_total: int = 0
    files_done: int = 0
    chunks_total: int = 0
    chunks_done: int = 0


@dataclass(frozen=True, slots=True)
class BuildOutcome:
    """What a finished build wrote (`version` None: nothing to index, nothing written)."""

    version: int | None
    documents: int
    chunks: int
    index_kind: str | None
    sources: dict[str, str] = field(default_factory=dict)  # name -> sha256 indexed
    file_errors: dict[str, str] = field(default_factory=dict)  # name -> why not


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed build: which knowledge base, which request it answers, what to read."""

    knowledge_base: str
    generation: int
    sources: list[str]
    full: bool
    uploaded: bool  # sources are the knowledge base's upload folder


class Builder(Protocol):
    def __call__(self, job: Job, progress: Callable[[BuildProgress], None]) -> BuildOutcome:
        """Build `job` (blocking; called in a worker thread), reporting `progress`."""
        ...


def percent(row: KnowledgeBase) -> int:
    if row.job_phase == "done":
        return 100
    if row.job_phase == "writing":
        return _READ + _EMBED
    if row.job_phase == "embedding":
        share = row.chunks_done / row.chunks_total if row.chunks_total else 1.0
        return _READ + int(_EMBED * share)
    if row.job_phase == "reading" and row.files_total:
        return int(_READ * row.files_done / row.files_total)
    return 0


def job_public(row: KnowledgeBase, *, now: datetime) -> IndexJobPublic | None:
    """The newest job of `row` as users see it; None when none was ever asked for."""
    if row.requested == 0:
        return None
    if row.requested > row.built and not running(row, now=now):
        return IndexJobPublic(
            status="queued", phase="queued", files_total=0, files_done=0,
            chunks_total=0, chunks_done=0, percent=0,
        )  # fmt: skip
    status = "running" if row.requested > row.built else (row.job_status or "done")
    return IndexJobPublic(
        status="failed" if status == "failed" else "done" if status == "done" else "running",
        phase=row.job_phase or "queued",
        files_total=row.files_total,
        files_done=row.files_done,
        chunks_total=row.chunks_total,
        chunks_done=row.chunks_done,
        percent=percent(row),
        error=row.job_error,
        started_at=row.job_started_at,
        finished_at=row.job_finished_at,
    )


def running(row: KnowledgeBase, *, now: datetime) -> bool:
    return row.job_status == "running" and row.lease_until is not None and row.lease_until > now


class IndexJobRunner:
    """Claims and runs index jobs, one at a time, until cancelled."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        rag: RagSettings,
        build: Builder,
        on_built: Callable[[str, int | None], object] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._rag = rag
        self._build = build
        self._on_built = on_built
        self._uploads = UploadStore(rag.upload_dir)

    async def run_forever(self) -> None:
        swept = 0.0
        while True:
            try:
                if time.monotonic() - swept > SWEEP_INTERVAL_S:
                    swept = time.monotonic()
                    await self.sweep()
                worked = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("index job runner: a round failed")
                worked = False
            if not worked:
                await asyncio.sleep(self._rag.indexer_poll_s)

    async def run_once(self) -> bool:
        """Claim one job and run it; False when there was none."""
        job = await self.claim()
        if job is None:
            return False
        await self.run(job)
        return True

    async def sweep(self) -> list[str]:
        """Delete the files and index versions of users' knowledge bases whose row is
        gone (their owner's account was deleted, or a deletion stopped half-way)."""
        store = store_for(self._rag)
        on_disk = set(await asyncio.to_thread(store.knowledge_bases))
        on_disk |= set(await asyncio.to_thread(self._uploads.knowledge_bases))
        on_disk = {kb for kb in on_disk if is_user_kb(kb)}
        if not on_disk:
            return []
        async with self._sessionmaker() as session:
            kept = set(
                await session.scalars(select(KnowledgeBase.id).where(KnowledgeBase.id.in_(on_disk)))
            )
        orphans = sorted(on_disk - kept)
        for kb in orphans:
            await asyncio.to_thread(store.delete, kb)
            await asyncio.to_thread(self._uploads.delete_all, kb)
        if orphans:
            logger.info("deleted the files and indexes of %d deleted knowledge bases", len(orphans))
        return orphans

    async def claim(self) -> Job | None:
        now = utcnow()
        async with self._sessionmaker() as session, session.begin():
            row = await session.scalar(
                select(KnowledgeBase)
                .where(KnowledgeBase.requested > KnowledgeBase.built)
                .where((KnowledgeBase.lease_until.is_(None)) | (KnowledgeBase.lease_until < now))
                .order_by(KnowledgeBase.job_started_at.asc().nulls_first(), KnowledgeBase.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if row is None:
                return None
            row.lease_until = now + timedelta(seconds=self._rag.indexer_lease_s)
            row.job_status, row.job_phase, row.job_error = "running", "reading", None
            row.files_done = row.chunks_total = row.chunks_done = 0
            row.job_started_at, row.job_finished_at = now, None
            uploaded = row.owner_id is not None or not row.sources
            return Job(
                knowledge_base=row.id,
                generation=row.requested,
                sources=[str(self._uploads.folder(row.id))]
                if uploaded
                else list(row.sources or []),
                full=row.full,
                uploaded=uploaded,
            )

    async def run(self, job: Job) -> None:
        """Build `job`, its progress and outcome written to its row as it goes."""
        loop = asyncio.get_running_loop()
        latest: list[BuildProgress] = []
        wake = asyncio.Event()

        def report(progress: BuildProgress) -> None:  # in the build's thread
            latest.append(progress)
            loop.call_soon_threadsafe(wake.set)

        stopping = asyncio.Event()

        async def publish() -> None:  # progress and the lease, at most 4 times a second
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=self._rag.indexer_lease_s / 4)
                wake.clear()
                if stopping.is_set():
                    return
                await self._progress(job, latest[-1] if latest else None)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=0.25)

        # Stopped, never cancelled: a write cancelled half-way could leave its
        # transaction, and the row's lock, open.
        publisher = asyncio.create_task(publish())
        started = time.perf_counter()
        try:
            if job.uploaded and not self._uploads.names(job.knowledge_base):
                await self._check_no_files(job)
                outcome = BuildOutcome(version=None, documents=0, chunks=0, index_kind=None)
                await asyncio.to_thread(store_for(self._rag).delete, job.knowledge_base)
            else:
                outcome = await asyncio.to_thread(self._build, job, report)
        except Exception as exc:
            logger.warning("knowledge base %s: build failed: %s", job.knowledge_base, exc)
            errors = exc.file_errors if isinstance(exc, NoDocuments) else {}
            failed = BuildOutcome(None, 0, 0, None, file_errors=errors)
            await self._finish(job, failed, error=str(exc) or type(exc).__name__)
            return
        finally:
            stopping.set()
            wake.set()
            await asyncio.shield(publisher)
        if latest:  # the last report may have come after the publisher's last write
            await self._progress(job, latest[-1])
        logger.info(
            "knowledge base %s: build %d done in %.1f s (version %s, %d chunks)",
            job.knowledge_base, job.generation, time.perf_counter() - started,
            outcome.version, outcome.chunks,
        )  # fmt: skip
        await self._finish(job, outcome)

    async def _check_no_files(self, job: Job) -> None:
        """An upload folder without files is an empty knowledge base only when no file
        is recorded either; else this indexer does not see the files (RAG_UPLOAD_DIR
        not on a volume every node mounts, or another deployment's database)."""
        async with self._sessionmaker() as session:
            recorded = await session.scalar(
                select(KnowledgeFile.name)
                .where(KnowledgeFile.knowledge_base_id == job.knowledge_base)
                .limit(1)
            )
        if recorded is not None:
            raise FileNotFoundError(
                f"the indexer finds none of this knowledge base's files in "
                f"{self._uploads.folder(job.knowledge_base)} (RAG_UPLOAD_DIR must be a "
                "folder every node of the cluster mounts); upload them again once it is"
            )

    async def _progress(self, job: Job, progress: BuildProgress | None) -> None:
        values: dict[str, object] = {
            "lease_until": utcnow() + timedelta(seconds=self._rag.indexer_lease_s)
        }
        if progress is not None:
            values.update(
                job_phase=progress.phase,
                files_total=progress.files_total,
                files_done=progress.files_done,
                chunks_total=progress.chunks_total,
                chunks_done=progress.chunks_done,
            )
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                update(KnowledgeBase)
                .where(KnowledgeBase.id == job.knowledge_base)
                .where(KnowledgeBase.built < job.generation)
                .values(**values)
            )

    async def _finish(self, job: Job, outcome: BuildOutcome, *, error: str | None = None) -> None:
        """Record the build's outcome; with `error`, the build failed (only the files in
        `outcome.file_errors` are marked) and the version before it keeps serving. A
        version built is handed to `on_built` (loaded for search) before it is recorded,
        so a knowledge base reads `ready` once a question over it is answered at once."""
        if self._on_built is not None and error is None:
            try:
                await asyncio.to_thread(self._on_built, job.knowledge_base, outcome.version)
            except Exception as exc:  # searches load it themselves, only later
                logger.warning("knowledge base %s: not preloaded: %s", job.knowledge_base, exc)
        async with self._sessionmaker() as session, session.begin():
            row = await session.get(KnowledgeBase, job.knowledge_base, with_for_update=True)
            if row is None:  # deleted while it was built: what the build wrote goes too
                await asyncio.to_thread(store_for(self._rag).delete, job.knowledge_base)
                return
            row.built = max(row.built, job.generation)
            row.lease_until = None
            row.job_finished_at = utcnow()
            if error is not None:
                row.job_status, row.job_phase, row.job_error = "failed", "failed", error
            else:
                row.job_status, row.job_phase, row.job_error = "done", "done", None
                row.full = False
                row.index_version = outcome.version
                row.documents, row.chunks = outcome.documents, outcome.chunks
                row.index_kind = outcome.index_kind
            if job.uploaded:
                await self._file_outcomes(session, job.knowledge_base, outcome)

    @staticmethod
    async def _file_outcomes(session: AsyncSession, kb: str, outcome: BuildOutcome) -> None:
        """Each file the build read: indexed, or its error. A file uploaded again since
        (other bytes) stays pending for the build that follows."""
        files = await session.scalars(
            select(KnowledgeFile).where(KnowledgeFile.knowledge_base_id == kb)
        )
        for file in files:
            if outcome.sources.get(file.name) == file.sha256:
                file.status, file.error = "indexed", None
            elif file.name in outcome.file_errors:
                file.status, file.error = "error", outcome.file_errors[file.name]


async def request_build(session: AsyncSession, kb: str, *, full: bool = False) -> None:
    """Ask for a build of `kb` (after the ones asked for before)."""
    values: dict[str, object] = {"requested": KnowledgeBase.requested + 1}
    if full:
        values["full"] = True
    await session.execute(update(KnowledgeBase).where(KnowledgeBase.id == kb).values(**values))
