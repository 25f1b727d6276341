"""The versioned index store: atomic versions, index kind by size, search, pruning,
incremental plans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chatapp.errors import InvalidRequest, NotFound
from chatapp.rag.store import IndexParams, IndexStore, plan_update


def rows_and_vectors(n: int, dim: int = 16, seed: int = 0) -> tuple[list[dict[str, Any]], Any]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [
        {
            "chunk_id": f"c{i}", "source": f"doc{i % 3}.md", "sha256": "x", "title": "T",
            "section": "S", "anchor": "s", "position": i, "start": 0, "end": 1, "text": f"t{i}",
        }
        for i in range(n)
    ]  # fmt: skip
    return rows, vectors


def write(store: IndexStore, n: int, seed: int = 0) -> Any:
    rows, vectors = rows_and_vectors(n, seed=seed)
    return store.write(
        "kb", rows=rows, vectors=vectors, model="m", sources={"doc0.md": "h"},
        chunk_tokens=200, chunk_overlap=40,
    )  # fmt: skip


def test_versions_are_written_whole_and_the_newest_is_loaded(tmp_path: Path) -> None:
    store = IndexStore(tmp_path, keep=2)
    assert store.knowledge_bases() == [] and store.latest("kb") is None
    with pytest.raises(NotFound):
        store.load("kb")
    first = write(store, 20)
    second = write(store, 30, seed=1)
    third = write(store, 10, seed=2)
    assert (first.version, second.version, third.version) == (1, 2, 3)
    assert store.versions("kb") == [2, 3]  # pruned to `keep`
    assert not [p for p in (tmp_path / "kb").iterdir() if p.name.startswith(".tmp")]
    loaded = store.load("kb")
    assert loaded.version == 3 and loaded.manifest.chunks == 10
    assert store.knowledge_bases() == ["kb"]


def test_exact_search_finds_the_vector_itself_and_respects_threshold(tmp_path: Path) -> None:
    store = IndexStore(tmp_path)
    write(store, 50)
    index = store.load("kb")
    _, vectors = rows_and_vectors(50)
    hits = index.search(vectors[[7, 9]], top_k=3, threshold=-1)
    assert [h[0].chunk_id for h in hits] == ["c7", "c9"]
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits[0]] == sorted((h.score for h in hits[0]), reverse=True)
    assert all(h.score >= 0.99 for h in index.search(vectors[:1], top_k=5, threshold=0.99)[0])


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_large_indexes_are_approximate(tmp_path: Path, kind: str) -> None:
    store = IndexStore(tmp_path, IndexParams(exact_max_vectors=100, ann_kind=kind, ivf_nprobe=8))
    manifest = write(store, 2000)
    assert manifest.index_kind == kind
    _, vectors = rows_and_vectors(2000)
    hits = store.load("kb").search(vectors[:20], top_k=1, threshold=-1)
    found = sum(h[0].chunk_id == f"c{i}" for i, h in enumerate(hits))
    assert found >= 18  # approximate, but finds (nearly) every exact duplicate


def test_bad_names_and_mismatched_rows_are_refused(tmp_path: Path) -> None:
    store = IndexStore(tmp_path)
    rows, vectors = rows_and_vectors(3)
    with pytest.raises(InvalidRequest):
        store.write("../etc", rows=rows, vectors=vectors, model="m", sources={},
                    chunk_tokens=1, chunk_overlap=0)  # fmt: skip
    with pytest.raises(ValueError):
        store.write("kb", rows=rows, vectors=vectors[:2], model="m", sources={},
                    chunk_tokens=1, chunk_overlap=0)  # fmt: skip
    assert store.latest("kb") is None


def test_update_plan_by_content_hash() -> None:
    plan = plan_update({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "changed", "d": "4"})
    assert plan.unchanged == ["a"] and plan.changed == ["b", "d"] and plan.removed == ["c"]
    assert plan_update({"a": "1"}, {"a": "1"}).up_to_date
    assert plan_update(None, {"a": "1"}).changed == ["a"]
