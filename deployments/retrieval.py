"""Retrieval: embed queries (batched with `@serve.batch`) and search the FAISS index of
a knowledge base. A shim over `chatapp.rag`.

Each replica loads the newest version of every shared knowledge base in `RAG_INDEX_DIR`
and looks for newer ones every `reload_interval_s` (or at once on `reload()`). Users'
own knowledge bases are loaded when first searched, and again when a search asks for a
newer version than the one loaded (the one its owner's latest upload built); the watcher
keeps the loaded ones current and drops deleted ones. A newer version is loaded off the
event loop and swapped in with one assignment: a search already running keeps the
version it started with, so no request is dropped. A version that fails to load is
logged and the current one keeps serving.
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
from chatapp.rag.store import LoadedIndex, is_user_kb, store_for
from deployments.scaling import autoscaling

logger = logging.getLogger(__name__)


@serve.deployment(name="Retrieval")
class Retrieval:
    def __init__(self, rag: RagSettings) -> None:
        self._rag = rag
        self._store = store_for(rag)
        self._model = model_label(rag.embedding_model)
        self._indexes: dict[str, LoadedIndex] = {}
        self._failed: dict[str, int] = {}  # kb -> version that failed to load
        self._embedder: Embedder | None = None
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._embed.set_max_batch_size(rag.batch_max_size)  # type: ignore[attr-defined]
        self._embed.set_batch_wait_timeout_s(rag.batch_wait_timeout_s)  # type: ignore[attr-defined]
        if self._store.knowledge_bases():
            self._embedder = embedder_for(rag)
        self._load_new()

    # -- index versions -------------------------------------------------------------

    def _load_new(self) -> list[str]:
        """Load every knowledge base whose newest version is not the one served (users'
        own ones only when loaded already); drop the ones deleted."""
        swapped = []
        on_disk = self._store.knowledge_bases()
        gone = set(self._indexes) - set(on_disk)
        if gone:
            self._indexes = {kb: i for kb, i in self._indexes.items() if kb not in gone}
            logger.info("dropped %s (deleted)", ", ".join(sorted(gone)))
        for kb in on_disk:
            if is_user_kb(kb) and kb not in self._indexes:
                continue
            if self._load(kb):
                swapped.append(f"{kb}@{self._indexes[kb].version}")
        if swapped:
            logger.info("serving %s", ", ".join(swapped))
        return swapped

    def _load(self, kb: str) -> bool:
        """Load the newest version of `kb` unless served already; whether one was."""
        latest = self._store.latest(kb)
        current = self._indexes.get(kb)
        if latest is None or (current and current.version == latest):
            return False
        if self._failed.get(kb) == latest:
            return False
        try:
            index = self._store.load(kb, latest)
            if index.manifest.model != self._model:
                raise ValueError(
                    f"built with {index.manifest.model}, this replica embeds with "
                    f"{self._model}; rebuild it or set RAG_EMBEDDING_MODEL"
                )
        except Exception as exc:
            self._failed[kb] = latest
            logger.error("knowledge base %s version %s not loaded: %s", kb, latest, exc)
            return False
        self._indexes = {**self._indexes, kb: index}  # one assignment: the swap
        return True

    async def _load_now(self, kb: str, min_version: int | None) -> LoadedIndex | None:
        """`kb` at `min_version` or newer, loaded now if this replica has not yet."""
        async with self._lock:
            index = self._indexes.get(kb)
            if index is None or (min_version is not None and index.version < min_version):
                if self._embedder is None:
                    self._embedder = await asyncio.to_thread(embedder_for, self._rag)
                await asyncio.to_thread(self._load, kb)
            return self._indexes.get(kb)

    async def reload(self, knowledge_base: str | None = None) -> dict[str, int]:
        """Look for newer versions now (and load `knowledge_base`, a user's own one just
        built, whether loaded before or not); returns what is served (kb -> version)."""
        async with self._lock:
            # The model first: an index is only served once queries can be embedded.
            if self._embedder is None and await asyncio.to_thread(self._store.knowledge_bases):
                self._embedder = await asyncio.to_thread(embedder_for, self._rag)
            await asyncio.to_thread(self._load_new)
            if knowledge_base is not None:
                await asyncio.to_thread(self._load, knowledge_base)
        self._ensure_watcher()
        return {kb: index.version for kb, index in self._indexes.items()}

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
            for kb, index in sorted(self._indexes.items())
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
            known = ", ".join(sorted(k for k in self._indexes if not is_user_kb(k))) or "none yet"
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
