"""Retrieval quality: nDCG@k and recall@k on a BEIR-style qrels dataset.

A dataset folder holds `queries.jsonl` (`{"_id", "text"}` per line) and
`qrels/test.tsv` (`query-id<TAB>corpus-id<TAB>score` with a header). Corpus ids are
sections: `<source>#<anchor>` (e.g. `docs/deploy-kuberay.md#deploy`), or a whole
document `<source>` when the anchor is empty; a retrieved chunk counts for its section.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatapp.rag.schemas import RetrievedChunk

Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True, slots=True)
class Dataset:
    queries: dict[str, str]
    qrels: Qrels


def load_dataset(folder: Path, split: str = "test") -> Dataset:
    queries = {}
    for line in (folder / "queries.jsonl").read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            queries[str(item["_id"])] = str(item["text"])
    qrels: Qrels = {}
    with (folder / "qrels" / f"{split}.tsv").open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    missing = set(qrels) - set(queries)
    if missing:
        raise ValueError(f"qrels name queries that queries.jsonl lacks: {sorted(missing)[:5]}")
    return Dataset(queries={q: queries[q] for q in qrels}, qrels=qrels)


def corpus_id(hit: RetrievedChunk) -> str:
    return f"{hit.source}#{hit.anchor}" if hit.anchor else hit.source


def ranked_ids(hits: Sequence[RetrievedChunk]) -> list[str]:
    """Corpus ids in rank order, each once (its best chunk's rank)."""
    seen: dict[str, None] = {}
    for hit in hits:
        seen.setdefault(corpus_id(hit), None)
    return list(seen)


def ndcg_at_k(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    dcg = sum(
        (2 ** relevant.get(doc, 0) - 1) / math.log2(i + 2) for i, doc in enumerate(ranking[:k])
    )
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {d for d, g in relevant.items() if g > 0}
    return len(wanted & set(ranking[:k])) / len(wanted) if wanted else 0.0


def mrr_at_k(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    for i, doc in enumerate(ranking[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def evaluate(
    rankings: Mapping[str, Sequence[str]], qrels: Qrels, *, ks: Sequence[int] = (1, 3, 5, 10)
) -> dict[str, float]:
    """Mean nDCG@10, MRR@10 and recall@k over the queries of `qrels`."""
    n = len(qrels)
    if not n:
        raise ValueError("no labelled queries")
    out = {
        "ndcg@10": sum(ndcg_at_k(rankings.get(q, []), rel, 10) for q, rel in qrels.items()) / n,
        "mrr@10": sum(mrr_at_k(rankings.get(q, []), rel, 10) for q, rel in qrels.items()) / n,
    }
    for k in ks:
        out[f"recall@{k}"] = (
            sum(recall_at_k(rankings.get(q, []), rel, k) for q, rel in qrels.items()) / n
        )
    out["queries"] = n
    return out
