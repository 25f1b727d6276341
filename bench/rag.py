"""Knowledge-base benchmarks, each against a baseline measured in the same run.

1. Index build: the Ray Data pipeline (`pipelines/build_index.py`: read, hash, parse,
   chunk, embed in an actor pool, FAISS, Parquet) against a plain single-process loop
   doing the same work with sentence-transformers on the same corpus (the project's
   README and docs/, copied `--copies` times). Both include loading the model.
2. Retrieval latency: one query embedded with the real model, then FAISS top-k over
   10k and 100k chunks. The vectors of the 10k / 100k indexes are synthetic (random unit
   vectors, 384 dimensions): the search cost depends on their number, not their meaning.
   10k is exact (IndexFlatIP); at 100k both exact and HNSW (what RAG_EXACT_MAX_VECTORS
   picks above 50k) are measured.

    python bench/rag.py [--copies 8] [--concurrency 2] [--queries 300]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from chatapp.config import RagSettings  # noqa: E402
from chatapp.rag.chunking import chunker_for  # noqa: E402
from chatapp.rag.documents import load_document  # noqa: E402
from chatapp.rag.embedder import Embedder  # noqa: E402
from chatapp.rag.store import IndexParams, build_faiss_index  # noqa: E402


def make_corpus(folder: Path, copies: int) -> Path:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for i in range(copies):
        for f in files:
            target = folder / f"copy{i}" / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f.read_text() + f"\n\nCopy {i}.\n")
    return folder


def plain_loop(corpus: Path, rag: RagSettings) -> tuple[int, float]:
    """Read, parse, chunk, embed and index in one process; returns (chunks, seconds)."""
    started = time.perf_counter()
    embedder = Embedder(rag.embedding_model)
    chunker = chunker_for(rag.embedding_model, rag.chunk_tokens, rag.chunk_overlap)
    chunks = []
    for path in sorted(corpus.rglob("*.md")):
        chunks.extend(chunker.split(load_document(str(path), path.read_bytes())))
    vectors = embedder.encode([c.embedding_text() for c in chunks], batch_size=rag.embed_batch_size)
    build_faiss_index(vectors, IndexParams())
    return len(chunks), time.perf_counter() - started


def ray_pipeline(corpus: Path, rag: RagSettings) -> tuple[int, float]:
    from pipelines.build_index import build_index

    started = time.perf_counter()
    report = build_index([str(corpus)], kb="bench", rag=rag, progress=lambda _m: None)
    return report.chunks, time.perf_counter() - started


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


def latency(queries: int) -> None:
    embedder = Embedder()
    texts = [f"How do I deploy ChatApp on KubeRay, question {i}?" for i in range(queries)]
    embedder.encode(texts[:4])
    embed_times = []
    for text in texts:
        t = time.perf_counter()
        embedder.encode([text])
        embed_times.append(time.perf_counter() - t)
    p50, p99 = percentiles(embed_times)
    print(f"\nquery embedding (all-MiniLM-L6-v2, CPU, 1 query): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    rng = np.random.default_rng(0)
    print("FAISS top-10 over synthetic unit vectors (384-d), one query at a time:")
    print(f"{'chunks':>8} {'index':>6} {'search p50':>11} {'p99':>8} {'+embed p50':>11} {'p99':>8}")
    for n in (10_000, 100_000):
        vectors = rng.normal(size=(n, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        kinds = [IndexParams(exact_max_vectors=n)]
        if n > 50_000:
            kinds.append(IndexParams(exact_max_vectors=50_000, ann_kind="hnsw"))
        for params in kinds:
            index, kind = build_faiss_index(vectors, params)
            if kind == "hnsw":
                index.hnsw.efSearch = params.hnsw_ef_search
            q = rng.normal(size=(queries, 384)).astype(np.float32)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            search_times = []
            for i in range(queries):
                t = time.perf_counter()
                index.search(q[i : i + 1], 10)
                search_times.append(time.perf_counter() - t)
            s50, s99 = percentiles(search_times)
            e50, e99 = percentiles([a + b for a, b in zip(search_times, embed_times, strict=False)])
            print(f"{n:>8} {kind:>6} {s50:>8.2f} ms {s99:>5.2f} ms {e50:>8.2f} ms {e99:>5.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8, help="copies of README + docs/")
    parser.add_argument("--concurrency", type=int, default=2, help="embedding actors")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()

    import ray

    ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    tmp = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    try:
        corpus = make_corpus(tmp / "corpus", args.copies)
        rag = RagSettings(
            index_dir=tmp / "indexes",
            embed_concurrency=args.concurrency,
            embed_batch_size=args.batch_size,
        )
        base_chunks, base_s = plain_loop(corpus, rag)
        ray_chunks, ray_s = ray_pipeline(corpus, rag)
        assert ray_chunks == base_chunks, (ray_chunks, base_chunks)
        base_rate, ray_rate = base_chunks / base_s, ray_chunks / ray_s
        print(f"index build, {base_chunks} chunks from {args.copies} copies of README + docs/ "
              f"({os.cpu_count()} CPUs):")  # fmt: skip
        print(f"  plain sentence-transformers loop: {base_s:6.1f} s  {base_rate:7.1f} chunks/s")
        print(f"  Ray Data pipeline ({args.concurrency} actors):  {ray_s:6.1f} s  "
              f"{ray_rate:7.1f} chunks/s  ratio {ray_rate / base_rate:.2f}x")  # fmt: skip
        latency(args.queries)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
