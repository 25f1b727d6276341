"""Knowledge-base benchmarks, each against a baseline measured in the same run.

1. Embedding stage, one core: the corpus's chunks embedded in one thread, step by step:
   today's calls of 64 chunks on PyTorch (the baseline), calls of 512 sorted by length,
   ONNX Runtime float32, ONNX Runtime int8 (the ONNX exports are made first, timed apart).
2. Index build: the Ray Data pipeline (`pipelines/build_index.py`: read, hash, parse,
   chunk, embed in an actor pool, FAISS + BM25, Parquet) as it ran before (PyTorch, one
   actor, calls of 64) against its defaults now (int8 ONNX Runtime, one actor per CPU,
   length-sorted windows), on the same corpus (the project's README and docs/, copied
   `--copies` times); both include loading the model. `--plain` adds the plain
   single-process sentence-transformers loop.
3. Retrieval latency: one query embedded with the real model, then FAISS top-k over
   10k and 100k chunks. The vectors of the 10k / 100k indexes are synthetic (random unit
   vectors, 384 dimensions): the search cost depends on their number, not their meaning.
   10k is exact (IndexFlatIP); at 100k both exact and HNSW (what RAG_EXACT_MAX_VECTORS
   picks above 50k) are measured.

    python bench/rag.py [--copies 8] [--queries 300] [--plain]

For the embedding stage alone on a GPU (no Ray, no ChatApp) see bench/embed_gpu.py.
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
from chatapp.rag.embedder import Embedder, resolve_backend, resolve_model  # noqa: E402
from chatapp.rag.onnx_export import onnx_file  # noqa: E402
from chatapp.rag.store import IndexParams, build_faiss_index  # noqa: E402


def make_corpus(folder: Path, copies: int) -> Path:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for i in range(copies):
        for f in files:
            target = folder / f"copy{i}" / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f.read_text() + f"\n\nCopy {i}.\n")
    return folder


def chunk_texts(corpus: Path, rag: RagSettings) -> list[str]:
    chunker = chunker_for(rag.embedding_model, rag.chunk_tokens, rag.chunk_overlap)
    chunks = []
    for path in sorted(corpus.rglob("*.md")):
        chunks.extend(chunker.split(load_document(str(path), path.read_bytes())))
    return [c.embedding_text() for c in chunks]


def embedding_stage(texts: list[str], rag: RagSettings) -> None:
    """chunks/s of one thread, step by step, against today's torch calls of 64."""
    model = resolve_model(rag.embedding_model)
    for quantized in (False, True):
        t = time.perf_counter()
        onnx_file(model, cache_dir=rag.model_cache_dir, quantized=quantized)
        print(f"ONNX export ({'int8' if quantized else 'float32'}), once, cached in "
              f"{rag.model_cache_dir}: {time.perf_counter() - t:.1f} s")  # fmt: skip
    steps = [
        ("PyTorch, calls of 64 (today)", "torch", 64),
        ("PyTorch, calls of 512 sorted by length", "torch", 512),
        ("ONNX Runtime float32, calls of 512", "onnx", 512),
        ("ONNX Runtime int8, calls of 512", "onnx-int8", 512),
    ]
    print(f"embedding stage, one thread, {len(texts)} chunks (batches of {rag.embed_batch_size}):")
    base = 0.0
    for label, backend, window in steps:
        embedder = Embedder(rag.embedding_model, backend=backend,  # type: ignore[arg-type]
                            cache_dir=rag.model_cache_dir, threads=1, device="cpu")  # fmt: skip
        embedder.encode(texts[:window], batch_size=rag.embed_batch_size)  # warm-up
        t = time.perf_counter()
        for start in range(0, len(texts), window):
            embedder.encode(texts[start : start + window], batch_size=rag.embed_batch_size)
        rate = len(texts) / (time.perf_counter() - t)
        base = base or rate
        print(f"  {label:<42} {rate:7.1f} chunks/s  {rate / base:5.2f}x")


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
    texts = [f"How do I deploy ChatApp on KubeRay, question {i}?" for i in range(queries)]
    embed_times: list[float] = []
    for backend in ("torch", RagSettings().embedding_backend):
        embedder = Embedder(backend=backend, device="cpu")  # type: ignore[arg-type]
        embedder.encode(texts[:4])
        embed_times = []
        for text in texts:
            t = time.perf_counter()
            embedder.encode([text])
            embed_times.append(time.perf_counter() - t)
        p50, p99 = percentiles(embed_times)
        print(f"\nquery embedding (all-MiniLM-L6-v2, {embedder.backend}, CPU, 1 query): "
              f"p50 {p50:.2f} ms, p99 {p99:.2f} ms")  # fmt: skip
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
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--plain", action="store_true", help="also the single-process loop")
    args = parser.parse_args()

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    try:
        corpus = make_corpus(tmp / "corpus", args.copies)
        rag = RagSettings(index_dir=tmp / "indexes", embed_batch_size=args.batch_size)
        embedding_stage(chunk_texts(corpus, rag), rag)
        ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        # Today's path: PyTorch, one actor, one call per 64 chunks.
        before = rag.model_copy(
            update={"embedding_backend": "torch", "embed_concurrency": 1, "embed_window": 64,
                    "index_dir": tmp / "before"}
        )  # fmt: skip
        old_chunks, old_s = ray_pipeline(corpus, before)
        new_chunks, new_s = ray_pipeline(corpus, rag)
        assert old_chunks == new_chunks, (old_chunks, new_chunks)
        old_rate, new_rate = old_chunks / old_s, new_chunks / new_s
        print(f"\nindex build, {new_chunks} chunks from {args.copies} copies of README + docs/ "
              f"({os.cpu_count()} CPUs), Ray Data pipeline:")  # fmt: skip
        print(f"  before (PyTorch, 1 actor, calls of 64):   {old_s:6.1f} s  "
              f"{old_rate:7.1f} chunks/s")  # fmt: skip
        backend = resolve_backend(RagSettings().embedding_backend, "cpu")
        print(f"  now (defaults: {backend}, 1 actor per CPU):   {new_s:6.1f} s  "
              f"{new_rate:7.1f} chunks/s  ratio {new_rate / old_rate:.2f}x")  # fmt: skip
        if args.plain:
            base_chunks, base_s = plain_loop(corpus, before)
            print(f"  plain sentence-transformers loop:          {base_s:6.1f} s  "
                  f"{base_chunks / base_s:7.1f} chunks/s")  # fmt: skip
        latency(args.queries)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
