"""The index versions one retrieval replica serves (no Ray here; `deployments.retrieval`
is the shim around it).

Shared knowledge bases are always served, at their newest version. Users' own ones are
loaded when first searched and kept while they fit in `budget_bytes`: past it, the least
recently searched are unloaded, and loaded again on their next search. With 10,000 users
a replica holds the ones in use, not every one ever searched.

A newer version is loaded, then swapped in with one assignment: a search already running
keeps the `LoadedIndex` it started with. A version that fails to load is remembered (and
logged) so it is not tried again on every search; the one loaded before keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from chatapp.rag.store import IndexStore, LoadedIndex, is_user_kb

logger = logging.getLogger(__name__)


class ServedIndexes:
    """What one replica serves; `get` is safe from any thread, loads run one at a time
    (the caller holds its own lock around `refresh` and `load`)."""

    def __init__(self, store: IndexStore, *, model: str, budget_bytes: int) -> None:
        self._store = store
        self._model = model
        self._budget = budget_bytes
        self._indexes: dict[str, LoadedIndex] = {}
        self._failed: dict[str, int] = {}  # kb -> version that failed to load
        self._recent: OrderedDict[str, int] = OrderedDict()  # users' ones: kb -> bytes, LRU first
        self._mutex = threading.Lock()  # `_recent`: touched by searches, trimmed by loads

    def get(self, kb: str) -> LoadedIndex | None:
        """The version of `kb` served now (None when not loaded); a user's one counts as
        recently searched."""
        index = self._indexes.get(kb)
        if index is not None and is_user_kb(kb):
            with self._mutex:
                if kb in self._recent:
                    self._recent.move_to_end(kb)
        return index

    def served(self) -> dict[str, LoadedIndex]:
        """Every knowledge base loaded now, by name (a snapshot)."""
        return self._indexes

    def user_bytes(self) -> int:
        """The estimated memory of the users' knowledge bases loaded now."""
        with self._mutex:
            return sum(self._recent.values())

    def refresh(self) -> list[str]:
        """Load the newest version of every shared knowledge base and of the users' ones
        loaded now; drop the deleted ones. Returns `kb@version` of each one swapped in."""
        on_disk = self._store.knowledge_bases()
        gone = set(self._indexes) - set(on_disk)
        if gone:
            self._drop(gone)
            logger.info("dropped %s (deleted)", ", ".join(sorted(gone)))
        swapped = [
            f"{kb}@{self._indexes[kb].version}"
            for kb in on_disk
            if (not is_user_kb(kb) or kb in self._indexes) and self.load(kb)
        ]
        if swapped:
            logger.info("serving %s", ", ".join(swapped))
        return swapped

    def load(self, kb: str) -> bool:
        """Load the newest version of `kb` unless it is served already (or failed to
        load before); whether one was. Loading a user's one may unload others."""
        latest = self._store.latest(kb)
        current = self._indexes.get(kb)
        if latest is None or (current is not None and current.version == latest):
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
        if is_user_kb(kb):
            self._trim(kb, index.nbytes)
        return True

    def _trim(self, kb: str, size: int) -> None:
        """Count `kb` as the most recently searched and unload the least recently
        searched users' ones while over the budget (never `kb` itself)."""
        evicted = []
        with self._mutex:
            self._recent[kb] = size
            self._recent.move_to_end(kb)
            total = sum(self._recent.values())
            while total > self._budget and len(self._recent) > 1:
                oldest, freed = self._recent.popitem(last=False)
                total -= freed
                evicted.append(oldest)
        if evicted:
            self._drop(set(evicted))
            logger.info(
                "unloaded %d users' knowledge bases not searched lately (%s): over "
                "RAG_USER_INDEX_MEMORY_MB",
                len(evicted),
                ", ".join(evicted),
            )

    def _drop(self, kbs: set[str]) -> None:
        self._indexes = {kb: i for kb, i in self._indexes.items() if kb not in kbs}
        with self._mutex:
            for kb in kbs:
                self._recent.pop(kb, None)
