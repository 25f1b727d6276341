"""Dense, lexical and hybrid ranking of one index version's chunks for a query.

Hybrid retrieval fuses the dense ranking (cosine of embeddings, FAISS) and the lexical
one (BM25) by reciprocal rank fusion: a chunk scores the sum over the rankings it is in
of 1 / (k + rank), so a chunk both find comes first, and one that only one of them finds
(an error code only words match, a paraphrase only embeddings match) still makes the
list. RRF needs no score calibration between the two retrievers, which is why it is used
rather than a weighted sum (see `pipelines/evaluate_retrieval.py` for the figures).

Whatever the ranking, a hit's `score` stays the cosine similarity of the chunk to the
query, so thresholds (`RAG_SCORE_THRESHOLD`, `RAG_AUTO_THRESHOLD`) mean the same in
every mode; chunks that match the query's words are kept below the score threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from chatapp.rag.embedder import Vectors
from chatapp.rag.lexical import LexicalIndex

Retrieval = Literal["dense", "lexical", "hybrid"]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], *, k: int = 60
) -> list[tuple[int, float]]:
    """(item, fused score) pairs, best first: each ranking adds 1 / (k + rank) to its items
    (rank 1 is the best); ties go to the smaller item id, so the order is stable."""
    if k < 1:
        raise ValueError("k must be at least 1")
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda p: (-p[1], p[0]))


@dataclass(frozen=True, slots=True)
class Ranked:
    """One chunk found for a query: its row in the version and its cosine to the query."""

    row: int
    cosine: float


def rank(
    query: Vectors,
    text: str,
    *,
    dense: Sequence[int],
    vectors: Callable[[Sequence[int]], Vectors],
    lexical: LexicalIndex,
    retrieval: Retrieval,
    top_k: int,
    threshold: float,
    depth: int,
    rrf_k: int,
) -> list[Ranked]:
    """The best `top_k` rows for one query in `retrieval` mode.

    `dense` is the dense ranking (rows, best first, from FAISS); `vectors` reads the
    embeddings of rows back, for their cosines. Rows below `threshold` are dropped unless
    the query's words matched them."""
    words = [] if retrieval == "dense" else lexical.search(text, depth=max(depth, top_k))
    matched = [row for row, _ in words]
    if retrieval == "lexical":
        order = matched
    elif retrieval == "hybrid":
        order = [row for row, _ in reciprocal_rank_fusion([dense, matched], k=rrf_k)]
    else:
        order = list(dense)
    if not order:
        return []
    cosines = np.asarray(vectors(order), dtype=np.float32) @ query.reshape(-1)
    matching = set(matched)
    hits = [
        Ranked(row, float(cosine))
        for row, cosine in zip(order, cosines, strict=True)
        if cosine >= threshold or row in matching
    ]
    return hits[:top_k]
