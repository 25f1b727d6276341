"""What a retrieval replica serves (chatapp.rag.served): shared knowledge bases always,
users' own ones within a memory budget (least recently searched unloaded first, loaded
again when searched), newer versions swapped in, deleted ones dropped, a broken version
never replacing the one that serves. Real FAISS indexes on disk."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from chatapp.rag.served import ServedIndexes
from chatapp.rag.store import IndexStore
from tests.unit.test_rag_store import rows_and_vectors


def user_kb() -> str:
    return f"kb-{uuid.uuid4().hex[:16]}"


def build(store: IndexStore, kb: str, n: int = 200, *, model: str = "m", seed: int = 0) -> None:
    rows, vectors = rows_and_vectors(n, seed=seed)
    store.write(
        kb, rows=rows, vectors=vectors, model=model, sources={"doc0.md": "h"},
        chunk_tokens=200, chunk_overlap=40,
    )  # fmt: skip


def search(served: ServedIndexes, kb: str) -> list[str]:
    """A search as the replica runs it: the served version, loaded first if need be."""
    index = served.get(kb)
    if index is None:
        served.load(kb)
        index = served.get(kb)
    assert index is not None, kb
    vector = rows_and_vectors(1, seed=99)[1]
    return [hit.source for hit in index.search(vector, top_k=2, threshold=-1.0)[0]]


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    return IndexStore(tmp_path)


def test_users_knowledge_bases_stay_within_the_budget_least_recently_searched_out_first(
    store: IndexStore,
) -> None:
    alice, bob, carol = user_kb(), user_kb(), user_kb()
    for kb in (alice, bob, carol):
        build(store, kb)
    build(store, "handbook", 2000)  # shared: far bigger than the budget, always served
    one = store.load(alice).nbytes
    assert one > 200 * 16 * 4  # the vectors at least
    served = ServedIndexes(store, model="m", budget_bytes=int(2.5 * one))
    assert served.refresh() == ["handbook@1"]  # users' ones wait for their first search
    assert set(served.served()) == {"handbook"}

    assert search(served, alice) and search(served, bob)
    assert set(served.served()) == {"handbook", alice, bob}
    search(served, alice)  # alice searched again: bob is now the least recent
    search(served, carol)  # over the budget: bob unloaded
    assert set(served.served()) == {"handbook", alice, carol}
    assert served.user_bytes() <= 2.5 * one

    assert search(served, bob)  # loaded again on its next search; alice is the least recent
    assert set(served.served()) == {"handbook", carol, bob}
    served.refresh()  # the watcher keeps what is loaded; it brings back no evicted one
    assert set(served.served()) == {"handbook", carol, bob}


def test_one_knowledge_base_larger_than_the_budget_is_still_served(store: IndexStore) -> None:
    big, small = user_kb(), user_kb()
    build(store, big, 1000)
    build(store, small, 50)
    served = ServedIndexes(store, model="m", budget_bytes=1)
    assert search(served, big)
    assert set(served.served()) == {big}
    assert search(served, small)
    assert set(served.served()) == {small}


def test_newer_versions_are_swapped_in_and_deleted_ones_dropped(store: IndexStore) -> None:
    mine = user_kb()
    build(store, mine, 30)
    build(store, "handbook", 30)
    served = ServedIndexes(store, model="m", budget_bytes=1 << 30)
    served.refresh()
    search(served, mine)
    before = served.get(mine)
    assert before is not None and before.version == 1
    build(store, mine, 40, seed=1)
    build(store, "handbook", 50, seed=1)
    assert sorted(served.refresh()) == sorted([f"{mine}@2", "handbook@2"])
    after = served.get(mine)
    assert after is not None and after.version == 2 and after.manifest.chunks == 40
    assert before.manifest.chunks == 30  # a search holding the old version keeps it whole

    store.delete(mine)
    served.refresh()
    assert set(served.served()) == {"handbook"} and served.user_bytes() == 0


def test_a_broken_version_leaves_the_served_one_serving(store: IndexStore) -> None:
    mine = user_kb()
    build(store, mine, 30)
    served = ServedIndexes(store, model="m", budget_bytes=1 << 30)
    search(served, mine)
    build(store, mine, 40, seed=1)
    (store.path(mine, 2) / "index.faiss").write_bytes(b"not faiss")
    assert served.load(mine) is False
    index = served.get(mine)
    assert index is not None and index.version == 1
    assert served.load(mine) is False  # remembered: not read again on every search
    build(store, mine, 50, seed=2)  # the next good version is taken
    assert served.load(mine) is True and served.get(mine).version == 3  # type: ignore[union-attr]


def test_an_index_built_with_another_model_is_not_served(store: IndexStore) -> None:
    mine = user_kb()
    build(store, mine, 30, model="other-model")
    served = ServedIndexes(store, model="m", budget_bytes=1 << 30)
    assert served.load(mine) is False and served.get(mine) is None
    assert served.user_bytes() == 0
