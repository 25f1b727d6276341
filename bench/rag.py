"""Knowledge-base benchmarks, each against a baseline measured in the same run.

1. Embedding stage, one core: `--stage-chunks` of the corpus's chunks embedded in one
   thread, step by step: today's calls of 64 chunks on PyTorch (the baseline), calls of
   512 sorted by length, then ONNX Runtime in float32 and int8, each graph three ways
   (attention traced as PyTorch's SDPA, as the export did before; as transformers'
   eager attention, the default; the default fused by ONNX Runtime's transformer
   optimizer) and each in forward passes of 64 chunks, of up to 256 tokens, and of one
   text (the default on one thread). The exports are made first, timed apart.
2. Index build: the Ray Data pipeline (`pipelines/build_index.py`: read, hash, parse,
   chunk, embed in an actor pool, FAISS + BM25, Parquet) as it ran before (PyTorch, one
   actor, calls of 64) against its defaults now (int8 ONNX Runtime, one actor per CPU,
   length-sorted windows), on the same corpus (the project's README and docs/, copied
   `--copies` times: 8 make ~2,400 chunks, so embedding, not start-up, dominates); both
   include starting the actors and loading the model. `--plain` adds the plain
   single-process sentence-transformers loop.
3. Retrieval latency: one query embedded with the real model, then FAISS top-k over
   10k and 100k chunks. The vectors of the 10k / 100k indexes are synthetic (random unit
   vectors, 384 dimensions): the search cost depends on their number, not their meaning.
   10k is exact (IndexFlatIP); at 100k both exact and HNSW (what RAG_EXACT_MAX_VECTORS
   picks above 50k) are measured.

    python bench/rag.py [--copies 8] [--stage-chunks 554] [--queries 300] [--plain]

Every section prints the machine's load average: other work on the machine slows them.

For the embedding stage alone on a GPU (no Ray, no ChatApp) see bench/embed_gpu.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
from chatapp.rag.onnx_encoder import CPU_PASS_TOKENS, OnnxEncoder  # noqa: E402
from chatapp.rag.onnx_export import export, onnx_file, quantize  # noqa: E402
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


def fused_variants(source: Path, scratch: Path, config: dict[str, Any]) -> tuple[Path, Path]:
    """ONNX Runtime's offline transformer fusion of `source` (Attention, SkipLayerNorm,
    BiasGelu...) and its int8 quantization (QAttention): measured, not used (slower here)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    fused, fused_int8 = scratch / "fused.onnx", scratch / "fused_int8.onnx"
    optimize_model(str(source), model_type="bert", num_heads=config["num_attention_heads"],
                   hidden_size=config["hidden_size"]).save_model_to_file(str(fused))  # fmt: skip
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # the quantizer logs every tensor
    quantize_dynamic(str(fused), str(fused_int8), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Attention"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fmt: skip
    root.setLevel(level)
    return fused, fused_int8


def embedding_stage(texts: list[str], rag: RagSettings, scratch: Path) -> None:
    """chunks/s of one thread, step by step, against today's torch calls of 64."""
    model = resolve_model(rag.embedding_model)
    files = {}
    for quantized in (False, True):
        t = time.perf_counter()
        files[quantized] = onnx_file(model, cache_dir=rag.model_cache_dir, quantized=quantized)
        print(f"ONNX export ({'int8' if quantized else 'float32'}), once, cached in "
              f"{rag.model_cache_dir}: {time.perf_counter() - t:.1f} s")  # fmt: skip
    # For comparison: attention traced as PyTorch's SDPA (the export before), and the
    # default graph fused by ONNX Runtime's transformer optimizer; each also in int8.
    sdpa, sdpa_int8 = scratch / "sdpa.onnx", scratch / "sdpa_int8.onnx"
    export(model, sdpa, attention="sdpa")
    quantize(sdpa, sdpa_int8)
    config = json.loads((Path(model) / "config.json").read_text())
    fused, fused_int8 = fused_variants(files[False], scratch, config)
    batch = rag.embed_batch_size
    print(f"embedding stage, one thread, {len(texts)} chunks, chunks/s and ratio to today's "
          f"({load()}):")  # fmt: skip

    def rate(encoder: Any, window: int) -> float:
        encoder.encode(texts[:window], batch_size=batch)  # warm-up
        t = time.perf_counter()
        for start in range(0, len(texts), window):
            encoder.encode(texts[start : start + window], batch_size=batch)
        return len(texts) / (time.perf_counter() - t)

    pytorch = Embedder(rag.embedding_model, backend="torch", threads=1, device="cpu")
    base = rate(pytorch, batch)
    print(f"  {'PyTorch, calls of ' + str(batch) + ' (today)':<40} {base:6.1f}  1.00x")
    sorted_rate = rate(pytorch, 512)
    print(f"  {'PyTorch, calls of 512 sorted by length':<40} {sorted_rate:6.1f} "
          f"{sorted_rate / base:5.2f}x")  # fmt: skip
    print(f"  ONNX Runtime, calls of 512 sorted:       passes of {batch:<3}   "
          f"<= {CPU_PASS_TOKENS} tokens   one text (default, 1 thread)")  # fmt: skip
    for label, file in (
        ("float32, SDPA attention (before)", sdpa),
        ("float32, eager attention", files[False]),
        ("float32, eager, ORT-fused", fused),
        ("int8, SDPA attention", sdpa_int8),
        ("int8, eager attention (default)", files[True]),
        ("int8, eager, ORT-fused", fused_int8),
    ):
        encoder = OnnxEncoder(model, cache_dir=rag.model_cache_dir, quantized=True, threads=1,
                              file=file)  # fmt: skip
        cells = []
        for pass_tokens in (None, CPU_PASS_TOKENS, 1):
            encoder.pass_tokens = pass_tokens
            r = rate(encoder, 512)
            cells.append(f"{r:6.1f} {r / base:5.2f}x")
        print(f"    {label:<38} {'    '.join(cells)}")
    print(f"  ({load()})")


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


def load() -> str:
    """The machine's load average: other work on it slows every figure here."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


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
    parser.add_argument("--stage-chunks", type=int, default=554,
                        help="chunks embedded by one thread (the first copies')")  # fmt: skip
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--plain", action="store_true", help="also the single-process loop")
    args = parser.parse_args()

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    try:
        corpus = make_corpus(tmp / "corpus", args.copies)
        rag = RagSettings(index_dir=tmp / "indexes", embed_batch_size=args.batch_size)
        embedding_stage(chunk_texts(corpus, rag)[: args.stage_chunks], rag, tmp)
        ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        # Today's path: PyTorch, one actor, one call per 64 chunks.
        before = rag.model_copy(
            update={"embedding_backend": "torch", "embed_concurrency": 1, "embed_window": 64,
                    "index_dir": tmp / "before"}
        )  # fmt: skip
        old_chunks, old_s = ray_pipeline(corpus, before)
        old_load = load()
        new_chunks, new_s = ray_pipeline(corpus, rag)
        assert old_chunks == new_chunks, (old_chunks, new_chunks)
        old_rate, new_rate = old_chunks / old_s, new_chunks / new_s
        print(f"\nindex build, {new_chunks} chunks from {args.copies} copies of README + docs/ "
              f"({os.cpu_count()} CPUs), Ray Data pipeline:")  # fmt: skip
        print(f"  before (PyTorch, 1 actor, calls of 64):   {old_s:6.1f} s  "
              f"{old_rate:7.1f} chunks/s  ({old_load} at its end)")  # fmt: skip
        backend = resolve_backend(RagSettings().embedding_backend, "cpu")
        print(f"  now (defaults: {backend}, 1 actor per CPU):   {new_s:6.1f} s  "
              f"{new_rate:7.1f} chunks/s  ratio {new_rate / old_rate:.2f}x  "
              f"({load()} at its end)")  # fmt: skip
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
