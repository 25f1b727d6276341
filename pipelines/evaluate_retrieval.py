"""Retrieval quality of a knowledge base: nDCG@10, MRR@10 and recall@k on a BEIR-style
qrels dataset (see `chatapp.rag.evaluation`).

    python -m pipelines.evaluate_retrieval --name docs --dataset pipelines/data/docs-qa
    python -m pipelines.evaluate_retrieval --sources README.md docs --dataset pipelines/data/docs-qa

With `--sources` a fresh index is built (Ray Data) into a temporary folder first, so the
figures do not depend on what `var/indexes` holds.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chatapp.config import RagSettings
from chatapp.rag.embedder import Embedder
from chatapp.rag.evaluation import evaluate, load_dataset, ranked_ids
from chatapp.rag.store import store_for

logger = logging.getLogger(__name__)


def evaluate_knowledge_base(
    kb: str, dataset: str | Path, *, rag: RagSettings, depth: int = 50
) -> dict[str, Any]:
    """Figures for the newest version of `kb` (queries embedded with its model)."""
    data = load_dataset(Path(dataset))
    index = store_for(rag).load(kb)
    embedder = Embedder(rag.embedding_model)
    ids = list(data.queries)
    hits = index.search(
        embedder.encode([data.queries[q] for q in ids]), top_k=depth, threshold=-1.0
    )
    rankings = {q: ranked_ids(h) for q, h in zip(ids, hits, strict=True)}
    figures: dict[str, Any] = {
        k: round(v, 4) if isinstance(v, float) else v
        for k, v in evaluate(rankings, data.qrels).items()
    }
    figures.update(
        knowledge_base=kb,
        version=index.version,
        chunks=index.manifest.chunks,
        model=index.manifest.model,
        chunk_tokens=index.manifest.chunk_tokens,
        dataset=str(dataset),
    )
    return figures


def evaluate_sources(
    sources: Sequence[str], dataset: str | Path, *, rag: RagSettings, kb: str = "eval"
) -> dict[str, Any]:
    """Build `sources` into a temporary index with Ray Data, then evaluate it."""
    from pipelines.build_index import build_index

    with tempfile.TemporaryDirectory() as tmp:
        rag = rag.model_copy(update={"index_dir": Path(tmp)})
        build_index(sources, kb=kb, rag=rag)
        return evaluate_knowledge_base(kb, dataset, rag=rag)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.evaluate_retrieval")
    parser.add_argument("--dataset", default="pipelines/data/docs-qa", help="BEIR-style folder")
    parser.add_argument("--name", default="docs", help="knowledge base to evaluate")
    parser.add_argument("--sources", nargs="*", help="build these into a temporary index first")
    parser.add_argument("--chunk-tokens", type=int, default=None, help="override RAG_CHUNK_TOKENS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rag = RagSettings()
    if args.chunk_tokens:
        rag = rag.model_copy(update={"chunk_tokens": args.chunk_tokens})
    if args.sources:
        import ray

        ray.init(include_dashboard=False, logging_level=logging.WARNING)
        figures = evaluate_sources(args.sources, args.dataset, rag=rag)
    else:
        figures = evaluate_knowledge_base(args.name, args.dataset, rag=rag)
    logger.info(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
