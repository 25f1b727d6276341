"""Hybrid retrieval: BM25 (bm25s) next to FAISS in each index version, reciprocal rank
fusion, and old versions without a lexical index still serving (dense only)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from chatapp.rag.embedder import Embedder
from chatapp.rag.hybrid import reciprocal_rank_fusion
from chatapp.rag.lexical import LexicalIndex
from chatapp.rag.store import IndexParams, IndexStore, LoadedIndex

# A support handbook: error codes only words can tell apart (embeddings place "E-7144"
# nearer to other codes' chunks than to its own), and a paraphrase with no word in common
# with its question, which only embeddings find.
CHUNKS = [
    ("Printer errors", "E-4417", "The print head overheated: let the printer cool for ten "
     "minutes before the next job."),
    ("Printer errors", "E-7144", "The paper tray is empty: refill it with A4 sheets."),
    ("Printer errors", "E-1447", "The toner cartridge is not an original one: replace it "
     "with a supported cartridge."),
    ("Printer errors", "E-4471", "The scanner lid is open: close it."),
    ("Pets", "Quiet puppies", "Reward a young hound for staying calm after dark so the "
     "household can sleep; ignore the howling and praise silence."),
    ("Garden", "Roses", "Prune roses in late winter, just before the buds break."),
    ("Billing", "Invoices", "Invoices are sent on the first working day of each month."),
]  # fmt: skip
CODE_QUESTION = "what does E-7144 mean"
PARAPHRASE_QUESTION = "how do I stop my dog barking at night?"


def rows() -> list[dict[str, Any]]:
    return [
        {"chunk_id": f"c{i}", "source": "handbook.md", "sha256": "x", "title": title,
         "section": section, "anchor": section.lower(), "position": i, "start": 0, "end": 1,
         "text": text}
        for i, (title, section, text) in enumerate(CHUNKS)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture
def index(tmp_path: Path, embedder: Embedder) -> LoadedIndex:
    store = IndexStore(tmp_path)
    texts = [f"{t} — {s}\n\n{x}" for t, s, x in CHUNKS]
    store.write("kb", rows=rows(), vectors=embedder.encode(texts), model="m",
                sources={"handbook.md": "x"}, chunk_tokens=200, chunk_overlap=40)  # fmt: skip
    return store.load("kb")


def top(
    index: LoadedIndex, embedder: Embedder, question: str, retrieval: Any, k: int = 1
) -> list[str]:
    hits = index.search(embedder.encode([question]), top_k=k, threshold=0.2,
                        texts=[question], retrieval=retrieval)[0]  # fmt: skip
    return [h.section for h in hits]


def test_lexical_finds_the_code_dense_finds_the_paraphrase_hybrid_finds_both(
    index: LoadedIndex, embedder: Embedder
) -> None:
    assert index.lexical is not None and index.lexical.rows == len(CHUNKS)
    assert (index.path / "lexical").is_dir()

    # Only words single out the exact error code...
    assert top(index, embedder, CODE_QUESTION, "dense") != ["E-7144"]
    assert top(index, embedder, CODE_QUESTION, "lexical") == ["E-7144"]
    # ...and only embeddings find a paraphrase sharing no word with the question.
    assert top(index, embedder, PARAPHRASE_QUESTION, "lexical") == []
    assert top(index, embedder, PARAPHRASE_QUESTION, "dense") == ["Quiet puppies"]
    # Fused, both are found first.
    assert top(index, embedder, CODE_QUESTION, "hybrid") == ["E-7144"]
    assert top(index, embedder, PARAPHRASE_QUESTION, "hybrid") == ["Quiet puppies"]


def test_hybrid_scores_stay_cosines_and_word_matches_pass_the_threshold(
    index: LoadedIndex, embedder: Embedder
) -> None:
    query = embedder.encode([CODE_QUESTION])
    dense = {h.chunk_id: h.score for h in index.search(query, top_k=10, threshold=-1)[0]}
    hybrid = index.search(query, top_k=10, threshold=0.99, texts=[CODE_QUESTION],
                          retrieval="hybrid")[0]  # fmt: skip
    # Nothing reaches a cosine of 0.99: what is left shares a word ("7144") with it.
    assert [h.section for h in hybrid] == ["E-7144"]
    assert all(h.score == pytest.approx(dense[h.chunk_id], abs=1e-5) for h in hybrid)
    unrelated = index.search(embedder.encode(["capital of Australia"]), top_k=4,
                             threshold=0.5, texts=["capital of Australia"],
                             retrieval="hybrid")[0]  # fmt: skip
    assert unrelated == []


def test_reciprocal_rank_fusion() -> None:
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 4]], k=60)
    assert [item for item, _ in fused] == [3, 1, 2, 4]  # in both lists beats first in one
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)
    assert reciprocal_rank_fusion([[5, 6], [6, 5]], k=1) == [(5, 1 / 2 + 1 / 3), (6, 1 / 2 + 1 / 3)]
    assert reciprocal_rank_fusion([[], []]) == []
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[1]], k=0)


def test_lexical_index_round_trip_and_queries_without_known_words(tmp_path: Path) -> None:
    built = LexicalIndex.build(["Pruning roses in winter", "Watering tomatoes", "Roses bloom"])
    built.save(tmp_path / "lexical")
    loaded = LexicalIndex.load(tmp_path / "lexical")
    assert [row for row, _ in loaded.search("pruned rose", depth=5)] == [0, 2]  # stemmed
    assert loaded.search("the and of", depth=5) == []  # stop words only
    assert loaded.search("zeppelin", depth=5) == []  # unknown word
    empty = LexicalIndex.build([])
    empty.save(tmp_path / "empty")
    assert LexicalIndex.load(tmp_path / "empty").search("roses", depth=5) == []


def test_old_version_without_lexical_index_still_serves_dense(
    index: LoadedIndex, embedder: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.rmtree(index.path / "lexical")  # as written before hybrid retrieval existed
    with caplog.at_level(logging.WARNING, logger="chatapp.rag.store"):
        old = IndexStore(index.path.parents[1]).load("kb")
    assert old.lexical is None and old.retrieval("hybrid") == "dense"
    assert "no lexical index" in caplog.text and "dense only" in caplog.text
    assert top(old, embedder, PARAPHRASE_QUESTION, "hybrid") == ["Quiet puppies"]
    query = embedder.encode([CODE_QUESTION])
    assert [h.chunk_id for h in old.search(query, top_k=3, threshold=-1, texts=[CODE_QUESTION],
                                           retrieval="lexical")[0]] == [
        h.chunk_id for h in old.search(query, top_k=3, threshold=-1)[0]
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_hybrid_on_approximate_indexes(tmp_path: Path, embedder: Embedder, kind: str) -> None:
    store = IndexStore(tmp_path, IndexParams(exact_max_vectors=2, ann_kind=kind))
    texts = [f"{t} — {s}\n\n{x}" for t, s, x in CHUNKS]
    store.write("kb", rows=rows(), vectors=embedder.encode(texts), model="m",
                sources={"handbook.md": "x"}, chunk_tokens=200, chunk_overlap=40)  # fmt: skip
    index = store.load("kb")
    assert index.manifest.index_kind == kind
    assert top(index, embedder, CODE_QUESTION, "hybrid") == ["E-7144"]
    hit = index.search(embedder.encode([CODE_QUESTION]), top_k=1, threshold=-1,
                       texts=[CODE_QUESTION], retrieval="hybrid")[0][0]  # fmt: skip
    assert hit.section == "E-7144"
    expected = embedder.encode([texts[hit.position]])[0] @ embedder.encode([CODE_QUESTION])[0]
    assert hit.score == pytest.approx(float(expected), abs=1e-4)  # read back from FAISS
