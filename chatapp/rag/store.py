"""The versioned index store on local disk.

    <index_dir>/<kb>/v000001/
        index.faiss      FAISS index (inner product on normalised vectors)
        chunks.parquet   one row per chunk, aligned with the index ids
        vectors.npy      the embeddings (reused by incremental updates)
        lexical/         BM25 index of the same chunks (chatapp.rag.lexical); versions
                         written before it existed have none and are searched dense only
        manifest.json    model, dimension, counts, source hashes, index kind, time

A version is written in a temporary folder and renamed into place, so readers only
ever see complete versions; the newest complete one is served. Old versions beyond
`keep_versions` are pruned.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sys
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from chatapp.config import RagSettings
from chatapp.errors import InvalidRequest, NotFound
from chatapp.rag.chunking import embedding_text
from chatapp.rag.embedder import Vectors
from chatapp.rag.hybrid import Retrieval, rank
from chatapp.rag.lexical import FOLDER as LEXICAL_FOLDER
from chatapp.rag.lexical import LexicalIndex
from chatapp.rag.schemas import RetrievedChunk

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"^v(\d{6})$")
# fullmatch only: `$` would let a trailing newline through
KB_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# users' own knowledge bases (chatapp.rag.library); every other name is a shared one
USER_KB = re.compile(r"kb-[0-9a-f]{16}")
CHUNK_COLUMNS = (
    "chunk_id", "source", "sha256", "title", "section", "anchor",
    "position", "start", "end", "text",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class IndexParams:
    """How the FAISS index is chosen and searched."""

    exact_max_vectors: int = 50_000
    ann_kind: str = "hnsw"
    hnsw_m: int = 32
    hnsw_ef_search: int = 64
    ivf_nprobe: int = 16


@dataclass(slots=True)
class Manifest:
    knowledge_base: str
    version: int
    model: str
    dimension: int
    documents: int
    chunks: int
    index_kind: str
    sources: dict[str, str]  # document name -> sha256 of its bytes
    created_at: str
    chunk_tokens: int
    chunk_overlap: int
    build: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls(**json.loads(path.read_text()))

    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)


def check_kb_name(name: str) -> str:
    if not KB_NAME.fullmatch(name):
        raise InvalidRequest(
            f"knowledge base name {name!r}: use 1-64 lower-case letters, digits, '-' or '_'"
        )
    return name


def is_user_kb(kb: str) -> bool:
    return USER_KB.fullmatch(kb) is not None


def build_faiss_index(vectors: Vectors, params: IndexParams) -> tuple[Any, str]:
    """Exact search while small; HNSW or IVF above `exact_max_vectors`."""
    import faiss

    n, dim = vectors.shape
    if n <= params.exact_max_vectors:
        index: Any = faiss.IndexFlatIP(dim)
        kind = "flat"
    elif params.ann_kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        kind = "hnsw"
    else:
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(n, size=min(n, nlist * 256), replace=False)]
        index.train(sample)
        kind = "ivf"
    if n:
        index.add(vectors)
    return index, kind


class LoadedIndex:
    """One version of a knowledge base in memory, ready to search (thread-safe reads)."""

    def __init__(self, path: Path, params: IndexParams) -> None:
        import faiss
        import pyarrow.parquet as pq

        self.path = path
        self.manifest = Manifest.read(path / "manifest.json")
        index: Any = faiss.read_index(str(path / "index.faiss"))
        if self.manifest.index_kind == "hnsw":
            index.hnsw.efSearch = params.hnsw_ef_search
        elif self.manifest.index_kind == "ivf":
            index.nprobe = params.ivf_nprobe
        self.index = index
        table = pq.read_table(path / "chunks.parquet")
        self.columns: dict[str, list[Any]] = {c: table.column(c).to_pylist() for c in CHUNK_COLUMNS}
        if self.index.ntotal != len(self.columns["chunk_id"]):
            raise ValueError(f"{path}: index and chunks.parquet disagree")
        self.lexical: LexicalIndex | None = None
        if (path / LEXICAL_FOLDER).is_dir():
            self.lexical = LexicalIndex.load(path / LEXICAL_FOLDER)
            if self.lexical.rows != self.index.ntotal:
                raise ValueError(f"{path}: lexical index and chunks.parquet disagree")
        else:
            logger.warning(
                "%s: version %d has no lexical index (built before hybrid retrieval): "
                "searched dense only; rebuild it with `chatapp index build --full`",
                self.name,
                self.version,
            )
        if self.lexical is not None and self.manifest.index_kind == "ivf":
            index.make_direct_map()  # so `vectors` can read back the vectors of lexical hits
        lexical = path / LEXICAL_FOLDER
        # the memory it holds, estimated: the FAISS index as saved, the chunk columns as
        # Python objects, the lexical index as saved
        self.nbytes = (
            (path / "index.faiss").stat().st_size
            + sum(sys.getsizeof(v) for values in self.columns.values() for v in values)
            + sum(f.stat().st_size for f in lexical.rglob("*") if f.is_file())
        )

    @property
    def name(self) -> str:
        return self.manifest.knowledge_base

    @property
    def version(self) -> int:
        return self.manifest.version

    def row(self, i: int) -> dict[str, Any]:
        return {c: self.columns[c][i] for c in CHUNK_COLUMNS}

    def vectors(self, rows: Sequence[int]) -> Vectors:
        """The embeddings of these rows, read back from the FAISS index."""
        found: Vectors = self.index.reconstruct_batch(np.asarray(rows, dtype=np.int64))
        return found

    def retrieval(self, wanted: Retrieval) -> Retrieval:
        """The retrieval this version can do: dense when it has no lexical index."""
        return wanted if self.lexical is not None else "dense"

    def search(
        self,
        queries: Vectors,
        *,
        top_k: int,
        threshold: float,
        texts: list[str] | None = None,
        retrieval: Retrieval = "dense",
        depth: int = 50,
        rrf_k: int = 60,
    ) -> list[list[RetrievedChunk]]:
        """Best `top_k` chunks per query, best first, those scoring (cosine) at least
        `threshold`. Lexical and hybrid `retrieval` need the queries' `texts`; hybrid
        fuses the best `depth` of each retriever (`chatapp.rag.hybrid`)."""
        if self.index.ntotal == 0:
            return [[] for _ in range(len(queries))]
        retrieval = self.retrieval(retrieval)
        if retrieval == "dense" or texts is None:
            scores, ids = self.index.search(queries, min(top_k, self.index.ntotal))
            return [
                [self._hit(int(i), float(score)) for score, i in zip(row_scores, row_ids,
                 strict=True) if i >= 0 and score >= threshold]
                for row_scores, row_ids in zip(scores, ids, strict=True)
            ]  # fmt: skip
        assert self.lexical is not None
        if len(texts) != len(queries):
            raise ValueError("one text per query vector is needed")
        depth = min(max(depth, top_k), self.index.ntotal)
        dense_ids = (
            self.index.search(queries, depth)[1]
            if retrieval == "hybrid"
            else np.zeros((len(queries), 0), dtype=np.int64)
        )
        return [
            [
                self._hit(r.row, r.cosine)
                for r in rank(
                    query, text, dense=[int(i) for i in ids if i >= 0], vectors=self.vectors,
                    lexical=self.lexical, retrieval=retrieval, top_k=top_k,
                    threshold=threshold, depth=depth, rrf_k=rrf_k,
                )
            ]
            for query, text, ids in zip(queries, texts, dense_ids, strict=True)
        ]  # fmt: skip

    def _hit(self, row: int, score: float) -> RetrievedChunk:
        # its sha256 is not part of a hit
        return RetrievedChunk(
            knowledge_base=self.name, version=self.version, score=score, **self.row(row)
        )


@dataclass(frozen=True, slots=True)
class UpdatePlan:
    """What an incremental build must redo, by content hash."""

    unchanged: list[str]
    changed: list[str]  # new or modified documents
    removed: list[str]

    @property
    def up_to_date(self) -> bool:
        return not self.changed and not self.removed


def plan_update(previous: dict[str, str] | None, current: dict[str, str]) -> UpdatePlan:
    previous = previous or {}
    return UpdatePlan(
        unchanged=sorted(n for n, h in current.items() if previous.get(n) == h),
        changed=sorted(n for n, h in current.items() if previous.get(n) != h),
        removed=sorted(set(previous) - set(current)),
    )


class IndexStore:
    def __init__(self, root: Path, params: IndexParams | None = None, *, keep: int = 3) -> None:
        self.root = Path(root)
        self.params = params or IndexParams()
        self.keep = keep

    def knowledge_bases(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if KB_NAME.fullmatch(p.name) and self.versions(p.name)
        )

    def versions(self, kb: str) -> list[int]:
        folder = self.root / kb
        if not folder.is_dir():
            return []
        found = []
        for p in folder.iterdir():
            m = _VERSION.match(p.name)
            if m and (p / "manifest.json").is_file():
                found.append(int(m.group(1)))
        return sorted(found)

    def latest(self, kb: str) -> int | None:
        versions = self.versions(kb)
        return versions[-1] if versions else None

    def path(self, kb: str, version: int) -> Path:
        return self.root / kb / f"v{version:06d}"

    def manifest(self, kb: str, version: int | None = None) -> Manifest | None:
        version = version if version is not None else self.latest(kb)
        if version is None:
            return None
        return Manifest.read(self.path(kb, version) / "manifest.json")

    def load(self, kb: str, version: int | None = None) -> LoadedIndex:
        version = version if version is not None else self.latest(kb)
        if version is None:
            raise NotFound(f"knowledge base {kb!r} not found; build it with `chatapp index build`")
        return LoadedIndex(self.path(kb, version), self.params)

    def previous_rows(self, kb: str) -> tuple[list[dict[str, Any]], Vectors | None]:
        """Chunk rows and vectors of the newest version (for incremental updates)."""
        version = self.latest(kb)
        if version is None:
            return [], None
        import pyarrow.parquet as pq

        path = self.path(kb, version)
        rows = pq.read_table(path / "chunks.parquet").to_pylist()
        return rows, np.load(path / "vectors.npy")

    def write(
        self,
        kb: str,
        *,
        rows: list[dict[str, Any]],
        vectors: Vectors,
        model: str,
        sources: dict[str, str],
        chunk_tokens: int,
        chunk_overlap: int,
        build: dict[str, Any] | None = None,
    ) -> Manifest:
        """Write a new version atomically and prune old ones; returns its manifest."""
        import faiss
        import pyarrow as pa
        import pyarrow.parquet as pq

        check_kb_name(kb)
        if len(rows) != len(vectors):
            raise ValueError("one vector per chunk row is needed")
        folder = self.root / kb
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(rows), -1)
            index, kind = build_faiss_index(vectors, self.params)
            faiss.write_index(index, str(tmp / "index.faiss"))
            schema = pa.schema(
                [(c, pa.int64() if c in ("position", "start", "end") else pa.string())
                 for c in CHUNK_COLUMNS]
            )  # fmt: skip
            table = pa.Table.from_pylist([{c: r[c] for c in CHUNK_COLUMNS} for r in rows], schema)
            pq.write_table(table, tmp / "chunks.parquet")
            np.save(tmp / "vectors.npy", vectors)
            LexicalIndex.build([embedding_text(r) for r in rows]).save(tmp / LEXICAL_FOLDER)
            for attempt in range(100):
                version = (self.latest(kb) or 0) + 1
                manifest = Manifest(
                    knowledge_base=kb,
                    version=version,
                    model=model,
                    dimension=int(vectors.shape[1]) if len(rows) else 0,
                    documents=len(sources),
                    chunks=len(rows),
                    index_kind=kind,
                    sources=dict(sorted(sources.items())),
                    created_at=datetime.now(UTC).isoformat(),
                    chunk_tokens=chunk_tokens,
                    chunk_overlap=chunk_overlap,
                    build=build or {},
                )
                (tmp / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2))
                try:
                    os.rename(tmp, self.path(kb, version))  # atomic; fails if taken
                    break
                except OSError:
                    if attempt == 99:
                        raise
            self.prune(kb)
            logger.info("knowledge base %s: version %d, %d chunks", kb, version, len(rows))
            return manifest
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def delete(self, kb: str) -> None:
        """Delete every version of `kb` (loaded ones live on in memory until dropped)."""
        check_kb_name(kb)
        shutil.rmtree(self.root / kb, ignore_errors=True)

    def prune(self, kb: str) -> None:
        """Delete all but the newest `keep` versions (loaded ones live on in memory)."""
        for version in self.versions(kb)[: -self.keep]:
            shutil.rmtree(self.path(kb, version), ignore_errors=True)


def store_for(rag: RagSettings) -> IndexStore:
    """The index store of `RagSettings`."""
    return IndexStore(
        rag.index_dir,
        IndexParams(
            exact_max_vectors=rag.exact_max_vectors,
            ann_kind=rag.ann_kind,
            hnsw_m=rag.hnsw_m,
            hnsw_ef_search=rag.hnsw_ef_search,
            ivf_nprobe=rag.ivf_nprobe,
        ),
        keep=rag.keep_versions,
    )
