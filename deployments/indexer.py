"""The indexer: builds knowledge bases in the background. A shim over `chatapp.rag.jobs`.

RAG_INDEXER_REPLICAS replicas (jobs are claimed in PostgreSQL, never twice) each run the job
loop from its constructor on; each job is the Ray Data pipeline of `pipelines/`, run in
a worker thread, whose embedding actors take the cluster's free CPUs (or GPUs). When a
build is written it asks a retrieval replica to load it before the job reads done; the
others load it when it is first searched there (the chat asks for the version the
owner's upload built).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ray import serve
from ray.serve.handle import DeploymentHandle

from chatapp.config import Settings
from chatapp.db.engine import make_engine, make_sessionmaker
from chatapp.rag.jobs import BuildOutcome, BuildProgress, IndexJobRunner, Job
from deployments.handles import RetrievalHandle
from pipelines.build_index import build_index

logger = logging.getLogger(__name__)


def build_job(settings: Settings) -> Callable[[Job, Callable[[BuildProgress], None]], BuildOutcome]:
    """The `Builder` port: a job run through the pipeline."""

    def build(job: Job, progress: Callable[[BuildProgress], None]) -> BuildOutcome:
        report = build_index(
            job.sources,
            kb=job.knowledge_base,
            rag=settings.rag,
            full=job.full,
            skip_errors=True,  # a bad file is reported on its own, the rest indexed
            report=progress,
            relative_names=job.uploaded,
        )
        return BuildOutcome(
            version=report.version,
            documents=report.documents,
            chunks=report.chunks,
            index_kind=report.index_kind,
            sources=report.sources,
            file_errors=report.file_errors,
        )

    return build


@serve.deployment(name="Indexer", ray_actor_options={"num_cpus": 0})
class Indexer:
    async def __init__(  # type: ignore[misc]
        self, settings: Settings, retrieval: DeploymentHandle | None
    ) -> None:
        self._engine = make_engine(settings.database)
        retriever = RetrievalHandle(retrieval) if retrieval is not None else None

        def loaded(kb: str, version: int | None) -> None:  # in a worker thread
            if retriever is not None:
                asyncio.run_coroutine_threadsafe(retriever.reload(kb), loop).result(timeout=120)

        loop = asyncio.get_running_loop()
        self._runner = IndexJobRunner(
            sessionmaker=make_sessionmaker(self._engine),
            rag=settings.rag,
            build=build_job(settings),
            on_built=loaded,
        )
        self._task = loop.create_task(self._runner.run_forever())

    async def check_health(self) -> None:
        if self._task.done():  # the loop never ends on its own: Serve restarts the replica
            raise RuntimeError(f"the index job loop stopped: {self._task!r}")
