"""Retrieval quality of a knowledge base: nDCG@10, MRR@10 and recall@k on a BEIR-style
qrels dataset (see `chatapp.rag.evaluation`), for each retrieval (dense, lexical, hybrid)
and, with `--sources`, each embedding backend, printed as one table.

    python -m pipelines.evaluate_retrieval --name docs --dataset pipelines/data/docs-qa
    python -m pipelines.evaluate_retrieval --sources README.md docs --dataset pipelines/data/docs-qa

With `--sources` a fresh index is built (Ray Data) into a temporary folder for each
backend (`--backends`, default torch onnx onnx-int8), so the figures do not depend on
what `var/indexes` holds, and the quantized model is compared with the float one.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from chatapp.config import RagSettings
from chatapp.config.rag import EmbeddingBackend, RetrievalMode
from chatapp.rag.embedder import embedder_for
from chatapp.rag.evaluation import evaluate, load_dataset, ranked_ids
from chatapp.rag.store import store_for

logger = logging.getLogger(__name__)

RETRIEVALS: tuple[RetrievalMode, ...] = get_args(RetrievalMode)
BACKENDS: tuple[EmbeddingBackend, ...] = ("torch", "onnx", "onnx-int8")
COLUMNS = ("ndcg@10", "recall@10", "mrr@10", "recall@5")


def evaluate_knowledge_base(
    kb: str,
    dataset: str | Path,
    *,
    rag: RagSettings,
    depth: int = 50,
    retrievals: Sequence[RetrievalMode] = RETRIEVALS,
) -> list[dict[str, Any]]:
    """Figures for the newest version of `kb` (queries embedded as `rag` says), one row
    per retrieval; a version without a lexical index has only the dense row."""
    data = load_dataset(Path(dataset))
    index = store_for(rag).load(kb)
    embedder = embedder_for(rag)
    ids = list(data.queries)
    texts = [data.queries[q] for q in ids]
    vectors = embedder.encode(texts)
    rows = []
    for retrieval in dict.fromkeys(index.retrieval(r) for r in retrievals):
        hits = index.search(
            vectors, top_k=depth, threshold=-1.0, texts=texts, retrieval=retrieval,
            depth=max(depth, rag.fusion_depth), rrf_k=rag.rrf_k,
        )  # fmt: skip
        rankings = {q: ranked_ids(h) for q, h in zip(ids, hits, strict=True)}
        figures: dict[str, Any] = {
            k: round(v, 4) if isinstance(v, float) else v
            for k, v in evaluate(rankings, data.qrels).items()
        }
        figures.update(
            retrieval=retrieval,
            backend=embedder.backend,
            knowledge_base=kb,
            version=index.version,
            chunks=index.manifest.chunks,
            model=index.manifest.model,
            chunk_tokens=index.manifest.chunk_tokens,
            dataset=str(dataset),
        )
        rows.append(figures)
    return rows


def evaluate_sources(
    sources: Sequence[str],
    dataset: str | Path,
    *,
    rag: RagSettings,
    kb: str = "eval",
    backends: Sequence[EmbeddingBackend] = BACKENDS,
    retrievals: Sequence[RetrievalMode] = RETRIEVALS,
) -> list[dict[str, Any]]:
    """Build `sources` into a temporary index with Ray Data for each backend, then
    evaluate each retrieval on it."""
    from pipelines.build_index import build_index

    rows: list[dict[str, Any]] = []
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp:
            built = rag.model_copy(update={"index_dir": Path(tmp), "embedding_backend": backend})
            build_index(sources, kb=kb, rag=built)
            rows.extend(evaluate_knowledge_base(kb, dataset, rag=built, retrievals=retrievals))
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The figures as a Markdown table (nDCG@10 and recall in points, 0-100)."""
    head = ["backend", "retrieval", *COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["backend"], row["retrieval"], *(f"{100 * row[c]:.1f}" for c in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    first = rows[0] if rows else {}
    lines.append(
        f"\n{first.get('queries', 0)} queries of {first.get('dataset', '?')}, "
        f"{first.get('chunks', 0)} chunks of {first.get('chunk_tokens', '?')} tokens, "
        f"model {first.get('model', '?')}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.evaluate_retrieval")
    parser.add_argument("--dataset", default="pipelines/data/docs-qa", help="BEIR-style folder")
    parser.add_argument("--name", default="docs", help="knowledge base to evaluate")
    parser.add_argument("--sources", nargs="*", help="build these into a temporary index first")
    parser.add_argument("--chunk-tokens", type=int, default=None, help="override RAG_CHUNK_TOKENS")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                        help="embedding backends compared (with --sources)")  # fmt: skip
    parser.add_argument("--retrievals", nargs="+", choices=RETRIEVALS, default=list(RETRIEVALS))
    parser.add_argument("--json", action="store_true", help="every figure, as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rag = RagSettings()
    if args.chunk_tokens:
        rag = rag.model_copy(update={"chunk_tokens": args.chunk_tokens})
    if args.sources:
        import ray

        ray.init(include_dashboard=False, logging_level=logging.WARNING)
        rows = evaluate_sources(
            args.sources, args.dataset, rag=rag, backends=args.backends,
            retrievals=args.retrievals,
        )  # fmt: skip
    else:
        rows = evaluate_knowledge_base(args.name, args.dataset, rag=rag, retrievals=args.retrievals)
    logger.info(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
