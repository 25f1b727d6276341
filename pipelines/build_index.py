"""Build or update a knowledge-base index with Ray Data.

    read_binary_files ─▶ map: hash, parse changed files ─▶ flat_map: token-aware chunks
        ─▶ map_batches: embed (actor pool) ─▶ FAISS + BM25 indexes + Parquet + manifest
           (a new version)

The embedding pool has one single-threaded actor per free CPU of the cluster (one per
GPU share with RAG_EMBED_NUM_GPUS), each running the model on the backend of
RAG_EMBEDDING_BACKEND (int8 ONNX Runtime on CPUs by default) over windows of chunks that
it sorts by length, so forward passes pad little.

Incremental by content hash: files whose bytes match the newest version are not parsed
or embedded again (their chunks and vectors are reused), removed files drop out. A bad
file fails the build with its name and nothing is written, so the current version keeps
serving (`skip_errors=True` leaves such files out instead).

    python -m pipelines.build_index SOURCE [SOURCE...] --name KB   (or `chatapp index build`)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import ray

from chatapp.config import RagSettings
from chatapp.errors import InvalidRequest
from chatapp.rag.chunking import chunker_for, embedding_text
from chatapp.rag.documents import (
    Document,
    DocumentError,
    NoDocuments,
    Section,
    content_hash,
    load_document,
)
from chatapp.rag.embedder import embedder_for, model_label
from chatapp.rag.jobs import BuildProgress
from chatapp.rag.sources import SourceFiles, content_hashes, list_source_files
from chatapp.rag.store import check_kb_name, plan_update, store_for

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
Report = Callable[[BuildProgress], None]


@dataclass(frozen=True, slots=True)
class BuildReport:
    knowledge_base: str
    version: int | None  # the version written; the current one when up to date
    up_to_date: bool
    documents: int
    changed: list[str]
    removed: list[str]
    skipped: list[str]
    chunks: int
    embedded_chunks: int
    index_kind: str
    seconds: float
    # document name -> sha256 of what the version holds; file -> why it was left out
    sources: dict[str, str] = field(default_factory=dict, repr=False)
    file_errors: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def chunks_per_s(self) -> float:
        return self.embedded_chunks / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        summary = {k: v for k, v in asdict(self).items() if k not in ("sources", "file_errors")}
        return {**summary, "chunks_per_s": round(self.chunks_per_s, 1)}


# -- Ray Data stages (plain functions and one callable class) ----------------------------


def _document_json(doc: Document) -> str:
    return json.dumps(
        {
            "name": doc.name,
            "title": doc.title,
            "sha256": doc.sha256,
            "sections": [[s.heading, s.anchor, s.text, s.offset] for s in doc.sections],
        }
    )


def _document_from_json(text: str) -> Document:
    d = json.loads(text)
    return Document(
        name=d["name"],
        title=d["title"],
        sha256=d["sha256"],
        sections=[Section(h, a, t, o) for h, a, t, o in d["sections"]],
    )


class _Extract:
    """Hash a file; parse it unless the newest version already has these bytes."""

    def __init__(self, names: dict[str, str], previous: dict[str, str]) -> None:
        self._names = {k.lstrip("/"): v for k, v in names.items()}
        self._previous = previous

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        name = self._names.get(str(row["path"]).lstrip("/"), str(row["path"]))
        data: bytes = row["bytes"]
        sha = content_hash(data)
        out = {"name": name, "sha256": sha, "status": "parsed", "document": "", "error": ""}
        if self._previous.get(name) == sha:
            out["status"] = "unchanged"
            return out
        try:
            out["document"] = _document_json(load_document(name, data))
        except DocumentError as exc:
            out.update(status="error", error=exc.message)
        return out


def _chunk_rows(
    row: dict[str, Any], *, model: str | None, tokens: int, overlap: int
) -> list[dict[str, Any]]:
    chunker = chunker_for(model, tokens, overlap)
    return [c.to_row() for c in chunker.split(_document_from_json(row["document"]))]


class _Embed:
    """One embedding model per actor of the pool; adds a `vector` column."""

    def __init__(self, rag: RagSettings, threads: int) -> None:
        self._embedder = embedder_for(rag, threads=threads)
        self._batch_size = rag.embed_batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [
            embedding_text({"title": t, "section": s, "text": x})
            for t, s, x in zip(batch["title"], batch["section"], batch["text"], strict=True)
        ]
        batch["vector"] = self._embedder.encode(texts, batch_size=self._batch_size)
        return batch


# -- the job ---------------------------------------------------------------------------


def build_index(
    sources: Sequence[str],
    *,
    kb: str,
    rag: RagSettings,
    full: bool = False,
    skip_errors: bool = False,
    progress: Progress | None = None,
    report: Report | None = None,
    relative_names: bool = False,
) -> BuildReport:
    """Build (or update) knowledge base `kb` from `sources`; returns what was done.

    `progress` gets lines for people, `report` where the build is (files read, chunks
    embedded). With `relative_names`, documents are named by their path under their
    source folder (uploads: the name they were uploaded as)."""
    say = progress or logger.info
    tell = report or (lambda _: None)
    started = time.perf_counter()
    check_kb_name(kb)
    if not sources:
        raise InvalidRequest("name at least one source folder, file or URI")
    store = store_for(rag)
    listings = [list_source_files(s, relative=relative_names) for s in sources]
    _check_unique_names(listings)
    model = model_label(rag.embedding_model)
    previous = store.manifest(kb)
    if (
        previous
        and not full
        and (
            previous.model != model
            or (previous.chunk_tokens, previous.chunk_overlap)
            != (rag.chunk_tokens, rag.chunk_overlap)
        )
    ):
        say(f"{kb}: model or chunking changed since version {previous.version}: full rebuild")
        full = True
    previous_hashes = {} if full or previous is None else previous.sources
    files = sum(len(listing.paths) for listing in listings)
    say(f"{kb}: reading {files} files from {', '.join(sources)}")
    tell(BuildProgress("reading", files_total=files))

    docs = None
    for listing in listings:
        part = ray.data.read_binary_files(
            listing.paths, filesystem=listing.filesystem, include_paths=True
        ).map(_Extract(listing.names, previous_hashes))
        docs = part if docs is None else docs.union(part)
    assert docs is not None
    docs = docs.materialize()
    statuses = docs.select_columns(["name", "sha256", "status", "error"]).take_all()
    tell(BuildProgress("reading", files_total=files, files_done=files))
    errors = sorted((r["name"], r["error"]) for r in statuses if r["status"] == "error")
    if errors and not skip_errors:
        detail = "; ".join(e for _, e in errors)
        raise DocumentError(
            f"{len(errors)} file(s) could not be read, nothing was written: {detail} "
            "(fix or remove them, or pass --skip-errors)"
        )
    current = {r["name"]: r["sha256"] for r in statuses if r["status"] != "error"}
    if not current:
        raise NoDocuments(dict(errors))
    plan = plan_update(previous_hashes, current)
    skipped = [name for name, _ in errors]
    if previous is not None and not full and plan.up_to_date:
        say(f"{kb}: version {previous.version} is up to date")
        return BuildReport(
            kb, previous.version, True, len(current), [], [], skipped, previous.chunks, 0,
            previous.index_kind, time.perf_counter() - started, current, dict(errors),
        )  # fmt: skip
    say(f"{kb}: {len(plan.changed)} new or changed, {len(plan.removed)} removed, "
        f"{len(plan.unchanged)} unchanged")  # fmt: skip

    rows: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    if plan.changed:
        chunks = (
            docs.filter(expr="status == 'parsed'")
            .flat_map(
                _chunk_rows,
                fn_kwargs={
                    "model": rag.embedding_model,
                    "tokens": rag.chunk_tokens,
                    "overlap": rag.chunk_overlap,
                },
            )
            # Chunks (text only) are done before the actor pool starts, so the actors
            # never hold the CPUs the chunking tasks wait for.
            .materialize()
        )
        actors = embedding_actors(rag)
        total = chunks.count()
        window = embedding_window(total, actors, rag)
        tell(BuildProgress("embedding", files, files, total, 0))
        say(f"{kb}: embedding with {actors} actor(s), {window} chunks a call")
        chunks = chunks.map_batches(
            _Embed,
            # the cache folder as this process sees it (actors may run elsewhere)
            fn_constructor_kwargs={
                "rag": rag.model_copy(update={"model_cache_dir": rag.model_cache_dir.resolve()}),
                "threads": 1,
            },
            batch_size=window,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=1,
            num_gpus=rag.embed_num_gpus,
        )
        for batch in chunks.iter_batches(batch_size=None, batch_format="numpy"):
            vectors.append(np.asarray(batch.pop("vector"), dtype=np.float32))
            columns = {k: v.tolist() for k, v in batch.items()}
            rows.extend(
                dict(zip(columns, values, strict=True))
                for values in zip(*columns.values(), strict=True)
            )
            tell(BuildProgress("embedding", files, files, total, len(rows)))
    embedded = len(rows)
    if not full and previous is not None:
        old_rows, old_vectors = store.previous_rows(kb)
        keep = set(plan.unchanged)
        kept = [i for i, r in enumerate(old_rows) if r["source"] in keep]
        rows.extend(old_rows[i] for i in kept)
        if old_vectors is not None and kept:
            vectors.append(old_vectors[kept])
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["source"], rows[i]["position"]))
    matrix = np.concatenate(vectors)[order] if vectors else np.zeros((0, 0), dtype=np.float32)
    rows = [rows[i] for i in order]
    seconds = time.perf_counter() - started
    tell(BuildProgress("writing", files, files, embedded, embedded))
    manifest = store.write(
        kb,
        rows=rows,
        vectors=matrix,
        model=model,
        sources=current,
        chunk_tokens=rag.chunk_tokens,
        chunk_overlap=rag.chunk_overlap,
        build={
            "changed": plan.changed,
            "removed": plan.removed,
            "skipped": skipped,
            "embedded_chunks": embedded,
            "embedding_backend": rag.embedding_backend,
            "lexical": "bm25s",
            "seconds": round(seconds, 2),
            "sources": list(sources),
        },
    )
    say(f"{kb}: version {manifest.version} written: {manifest.chunks} chunks "
        f"({embedded} embedded), {manifest.index_kind} index, {seconds:.1f} s")  # fmt: skip
    return BuildReport(
        kb, manifest.version, False, len(current), plan.changed, plan.removed, skipped,
        manifest.chunks, embedded, manifest.index_kind, time.perf_counter() - started,
        current, dict(errors),
    )  # fmt: skip


def embedding_actors(rag: RagSettings) -> int:
    """Actors of the embedding pool: `embed_concurrency`, or one per CPU (or GPU share)
    free in the cluster now, so a build neither idles cores nor waits for busy ones. On
    one node, no more than its real cores (Ray's logical CPUs may be set higher)."""
    if rag.embed_concurrency:
        return rag.embed_concurrency
    free = ray.available_resources()
    if rag.embed_num_gpus:
        return max(1, int(free.get("GPU", 0) / rag.embed_num_gpus))
    fits = int(free.get("CPU", 1))
    if sum(1 for node in ray.nodes() if node.get("Alive")) <= 1:
        fits = min(fits, os.cpu_count() or 1)
    return max(1, fits)


def embedding_window(chunks: int, actors: int, rag: RagSettings) -> int:
    """Chunks per actor call: up to `embed_window` (sorted by length within it), but
    small enough that every actor gets a few calls."""
    share = math.ceil(chunks / (4 * actors)) if chunks else rag.embed_batch_size
    return max(rag.embed_batch_size, min(rag.embed_window, share))


def _check_unique_names(listings: list[SourceFiles]) -> None:
    seen: dict[str, str] = {}
    for listing in listings:
        for name in listing.names.values():
            if name in seen:
                raise InvalidRequest(f"{name} is named by two sources ({seen[name]})")
            seen[name] = listing.source


def index_is_current(sources: Sequence[str], *, kb: str, rag: RagSettings) -> bool:
    """Whether the newest version of `kb` has exactly these files' bytes (hashed here,
    without Ray: cheap for a folder of docs)."""
    manifest = store_for(rag).manifest(kb)
    if manifest is None or manifest.model != model_label(rag.embedding_model):
        return False
    if (manifest.chunk_tokens, manifest.chunk_overlap) != (rag.chunk_tokens, rag.chunk_overlap):
        return False
    hashes: dict[str, str] = {}
    for source in sources:
        hashes.update(content_hashes(list_source_files(source)))
    return hashes == manifest.sources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.build_index", description=__doc__)
    parser.add_argument("sources", nargs="+", help="folders, files or URIs (s3://, gs://, ...)")
    parser.add_argument("--name", required=True, help="knowledge base name, e.g. docs")
    parser.add_argument("--full", action="store_true", help="re-embed everything")
    parser.add_argument("--skip-errors", action="store_true", help="leave unreadable files out")
    parser.add_argument("--address", default=None, help="Ray cluster to join")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not ray.is_initialized():
        ray.init(address=args.address, include_dashboard=False, logging_level=logging.WARNING)
    report = build_index(
        args.sources,
        kb=args.name,
        rag=RagSettings(),
        full=args.full,
        skip_errors=args.skip_errors,
        progress=logger.info,
    )
    logger.info(json.dumps(report.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
