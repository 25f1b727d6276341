"""Retrieval: embed queries (batched with `@serve.batch`) and search the FAISS index of
a knowledge base. A shim over `chatapp.rag`.

Each replica serves what `chatapp.rag.served.ServedIndexes` holds: the newest version of
every shared knowledge base in `RAG_INDEX_DIR`, and users' own ones loaded when first
searched (and again when a search asks for a newer version than the one loaded: the one
its owner's latest upload built), the least recently searched unloaded past
`RAG_USER_INDEX_MEMORY_MB`. It looks for newer versions every `reload_interval_s` (or at
once on `reload()`), loading off the event loop, so no request is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np
from ray import serve

from chatapp.config import RagSettings, ServeSettings
from chatapp.errors import InvalidRequest, NotFound
from chatapp.openai_api.embeddings import EmbeddingResult, check_lengths
from chatapp.rag.chunking import chunker_for
from chatapp.rag.embedder import Embedder, Vectors, embedder_for, model_label
from chatapp.rag.schemas import KnowledgeBasePublic, RetrievedChunk
from chatapp.rag.served import ServedIndexes
from chatapp.rag.store import LoadedIndex, is_user_kb, store_for
from deployments.scaling import autoscaling

logger = logging.getLogger(__name__)


@serve.deployment(name="Retrieval")
class Retrieval:
    def __init__(self, rag: RagSettings) -> None:
        self._rag = rag
        self._store = store_for(rag)
        self._indexes = ServedIndexes(
            self._store,
            model=model_label(rag.embedding_model),
            budget_bytes=rag.user_index_memory_mb * 1024 * 1024,
        )
        self._embedder: Embedder | None = None
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._embed.set_max_batch_size(rag.batch_max_size)  # type: ignore[attr-defined]
        self._embed.set_batch_wait_timeout_s(rag.batch_wait_timeout_s)  # type: ignore[attr-defined]
        if self._store.knowledge_bases():
            self._embedder = embedder_for(rag)
        self._indexes.refresh()

    # -- index versions -------------------------------------------------------------

    async def _load_now(self, kb: str, min_version: int | None) -> LoadedIndex | None:
        """`kb` at `min_version` or newer, loaded now if this replica has not yet."""
        async with self._lock:
            index = self._indexes.get(kb)
            if index is None or (min_version is not None and index.version < min_version):
                if self._embedder is None:
                    self._embedder = await asyncio.to_thread(embedder_for, self._rag)
                await asyncio.to_thread(self._indexes.load, kb)
            return self._indexes.get(kb)

    async def reload(self, knowledge_base: str | None = None) -> dict[str, int]:
        """Look for newer versions now (and load `knowledge_base`, a user's own one just
        built, whether loaded before or not); returns what is served (kb -> version)."""
        async with self._lock:
            # The model first: an index is only served once queries can be embedded.
            if self._embedder is None and await asyncio.to_thread(self._store.knowledge_bases):
                self._embedder = await asyncio.to_thread(embedder_for, self._rag)
            await asyncio.to_thread(self._indexes.refresh)
            if knowledge_base is not None:
                await asyncio.to_thread(self._indexes.load, knowledge_base)
        self._ensure_watcher()
        return {kb: index.version for kb, index in self._indexes.served().items()}

    def _ensure_watcher(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._rag.reload_interval_s)
            with contextlib.suppress(Exception):
                await self.reload()

    # -- queries ----------------------------------------------------------------------

    async def knowledge_bases(self) -> list[KnowledgeBasePublic]:
        self._ensure_watcher()
        return [
            KnowledgeBasePublic(
                id=kb,
                name=kb,
                version=index.version,
                documents=index.manifest.documents,
                chunks=index.manifest.chunks,
                model=index.manifest.model,
                index_kind=index.manifest.index_kind,
                mode=self._rag.mode_of(kb),
                created_at=index.manifest.created(),
            )
            for kb, index in sorted(self._indexes.served().items())
            if not is_user_kb(kb)  # users' own: listed by the library, to their readers
        ]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _embed(self, queries: list[str]) -> list[Vectors]:
        assert self._embedder is not None
        vectors = await asyncio.to_thread(self._embedder.encode, queries)
        return [vectors[i : i + 1] for i in range(len(queries))]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _embed_texts(self, requests: list[list[str]]) -> list[Vectors]:
        """Several /v1/embeddings requests' texts in one call of the embedder."""
        assert self._embedder is not None
        vectors = await asyncio.to_thread(self._embedder.encode, [t for r in requests for t in r])
        ends = np.cumsum([len(r) for r in requests])
        return np.split(vectors, ends[:-1])

    async def embed(self, texts: list[str], *, max_input_tokens: int) -> EmbeddingResult:
        """/v1/embeddings: `texts` embedded as knowledge-base chunks are, with their length
        in the tokens chunks are counted in; `PayloadTooLarge` (nothing embedded) for one
        longer than `max_input_tokens`."""
        rag = self._rag
        chunker = await asyncio.to_thread(
            chunker_for, rag.embedding_model, rag.chunk_tokens, rag.chunk_overlap
        )
        tokens = await asyncio.to_thread(lambda: [chunker.count_tokens(t) for t in texts])
        check_lengths(tokens, max_input_tokens=max_input_tokens)
        if self._embedder is None:
            async with self._lock:
                if self._embedder is None:
                    self._embedder = await asyncio.to_thread(embedder_for, rag)
        return EmbeddingResult(await self._embed_texts(texts), tokens)

    async def search(
        self,
        query: str,
        knowledge_base: str,
        *,
        top_k: int | None = None,
        score_threshold: float | None = None,
        missing_ok: bool = False,
        min_version: int | None = None,
    ) -> list[RetrievedChunk]:
        """The best chunks of `knowledge_base` for `query`, best first, from index
        version `min_version` or newer when given.

        `NotFound` for an unknown knowledge base (an empty list with `missing_ok`),
        `InvalidRequest` for an empty query or one over `max_query_chars`."""
        self._ensure_watcher()
        if not query.strip():
            raise InvalidRequest("query: empty")
        if len(query) > self._rag.max_query_chars:
            raise InvalidRequest(
                f"query: {len(query)} characters, more than the {self._rag.max_query_chars} "
                "a search takes (RAG_MAX_QUERY_CHARS); shorten it"
            )
        index = self._indexes.get(knowledge_base)  # this version serves the whole request
        if index is None or (min_version is not None and index.version < min_version):
            index = await self._load_now(knowledge_base, min_version)
        if index is None:
            if missing_ok:
                return []
            served = self._indexes.served()
            known = ", ".join(sorted(k for k in served if not is_user_kb(k))) or "none yet"
            raise NotFound(
                f"knowledge base {knowledge_base!r} not found (available: {known}); "
                "build it with `chatapp index build SOURCE --name NAME`"
            )
        vector = await self._embed(query)
        hits = await asyncio.to_thread(
            index.search,
            vector,
            top_k=top_k or self._rag.top_k,
            threshold=self._rag.score_threshold if score_threshold is None else score_threshold,
            texts=[query],
            retrieval=self._rag.retrieval_of(knowledge_base),
            depth=self._rag.fusion_depth,
            rrf_k=self._rag.rrf_k,
        )
        return hits[0]

    async def check_health(self) -> None:
        self._ensure_watcher()


def retrieval_options(
    rag: RagSettings, serve: ServeSettings, logging_config: dict[str, Any]
) -> dict[str, Any]:
    """Serve options of the retrieval deployment from settings (autoscaling, resources)."""
    return {
        "autoscaling_config": autoscaling(
            serve,
            min_replicas=rag.min_replicas,
            max_replicas=rag.max_replicas,
            target=rag.target_ongoing_requests,
        ),
        "max_ongoing_requests": rag.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": rag.num_cpus, "num_gpus": rag.num_gpus},
        "logging_config": logging_config,
    }
