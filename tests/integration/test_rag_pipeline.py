"""The Ray Data index pipeline on a tiny corpus (pdf, html, md, txt): a first build,
incremental updates by content hash, and bad input that writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatapp.config import RagSettings
from chatapp.errors import InvalidRequest
from chatapp.rag.documents import DocumentError
from chatapp.rag.embedder import Embedder
from chatapp.rag.store import store_for
from pipelines.build_index import build_index, index_is_current
from tests.fakes.corpus import PRINTER_MD, write_corpus

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_build_then_update_incrementally(tmp_path: Path, embedder: Embedder) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    rag = RagSettings(index_dir=tmp_path / "indexes", chunk_tokens=64, chunk_overlap=8)
    store = store_for(rag)
    sources = [str(corpus)]

    first = build_index(sources, kb="garden", rag=rag)
    names = {str(corpus / n) for n in ("garden.md", "bees.html", "compost.pdf", "more/notes.txt")}
    assert first.version == 1 and set(first.changed) == names and first.documents == 4
    index = store.load("garden")
    assert index.manifest.sources.keys() == names and index.manifest.index_kind == "flat"
    assert index.manifest.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert index.manifest.dimension == 384 and index.manifest.chunks == first.chunks
    assert not any("do not index" in t for t in index.columns["text"])

    def best(question: str) -> str:
        hit = index.search(embedder.encode([question]), top_k=1, threshold=0)[0][0]
        return f"{Path(hit.source).name}#{hit.anchor}"

    assert best("how often should I turn my compost heap?") == "compost.pdf#page-1"
    assert best("how often to inspect a beehive") == "bees.html#hive-inspection"
    assert best("when do I prune roses") == "garden.md#pruning-roses"
    assert index_is_current(sources, kb="garden", rag=rag)

    # Nothing changed: no new version, nothing embedded.
    again = build_index(sources, kb="garden", rag=rag)
    assert again.up_to_date and again.version == 1 and again.embedded_chunks == 0

    # One file edited, one removed, one added: only those are redone.
    garden_chunks = {
        cid for cid, src in zip(index.columns["chunk_id"], index.columns["source"], strict=True)
        if src.endswith("bees.html") or src.endswith("compost.pdf")
    }  # fmt: skip
    (corpus / "garden.md").write_text("# Garden\n\n## Lawns\n\nMow the lawn weekly in May.\n")
    (corpus / "more" / "notes.txt").unlink()
    (corpus / "herbs.md").write_text("# Herbs\n\nBasil likes sun and warm nights.\n")
    assert not index_is_current(sources, kb="garden", rag=rag)
    update = build_index(sources, kb="garden", rag=rag)
    assert update.version == 2
    assert update.changed == sorted([str(corpus / "garden.md"), str(corpus / "herbs.md")])
    assert update.removed == [str(corpus / "more/notes.txt")]
    index = store.load("garden")
    assert update.embedded_chunks == sum(
        src.endswith(("garden.md", "herbs.md")) for src in index.columns["source"]
    )
    assert garden_chunks <= set(index.columns["chunk_id"])  # reused as they were
    assert not any(s.endswith("notes.txt") for s in index.columns["source"])
    assert best("how often should I mow the lawn") == "garden.md#lawns"
    assert index.manifest.build["changed"] == update.changed


def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    rag = RagSettings(index_dir=tmp_path / "indexes", chunk_tokens=64, chunk_overlap=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidRequest, match="no documents to index"):
        build_index([str(tmp_path / "empty")], kb="k", rag=rag)
    with pytest.raises(InvalidRequest, match="no such file or folder"):
        build_index([str(tmp_path / "missing")], kb="k", rag=rag)
    with pytest.raises(InvalidRequest, match="knowledge base name"):
        build_index([str(corpus)], kb="Bad Name", rag=rag)

    assert build_index([str(corpus)], kb="k", rag=rag).version == 1
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 truncated nonsense")
    with pytest.raises(DocumentError) as info:
        build_index([str(corpus)], kb="k", rag=rag)
    assert "broken.pdf: not a readable PDF" in info.value.message
    assert "nothing was written" in info.value.message
    assert store_for(rag).versions("k") == [1]  # the current version keeps serving

    skipped = build_index([str(corpus)], kb="k", rag=rag, skip_errors=True)
    assert skipped.skipped == [str(corpus / "broken.pdf")] and skipped.up_to_date


def test_each_version_gets_a_lexical_index_that_hybrid_search_uses(
    tmp_path: Path, embedder: Embedder
) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "printer.md").write_text(PRINTER_MD)
    rag = RagSettings(index_dir=tmp_path / "indexes", chunk_tokens=64, chunk_overlap=8)
    assert rag.retrieval == "hybrid"
    build_index([str(corpus)], kb="office", rag=rag)
    index = store_for(rag).load("office")
    assert index.lexical is not None and index.lexical.rows == index.manifest.chunks
    assert index.manifest.build["lexical"] == "bm25s"

    def best(question: str, retrieval: str) -> str:
        hits = index.search(
            embedder.encode([question]),
            top_k=1,
            threshold=0.2,
            texts=[question],
            retrieval=retrieval,
        )[0]  # type: ignore[arg-type]
        return f"{Path(hits[0].source).name}#{hits[0].anchor}" if hits else ""  # fmt: skip

    code = "what does E-7144 mean"
    assert best(code, "dense") != "printer.md#e-7144"  # embeddings mix the codes up
    assert best(code, "hybrid") == "printer.md#e-7144"
    assert best("when do I cut back my roses", "hybrid") == "garden.md#pruning-roses"

    # An update rebuilds the lexical index with the kept chunks and the new ones.
    (corpus / "printer.md").write_text(PRINTER_MD + "\n## QQ-1000\n\nThe scanner lid is open.\n")
    assert build_index([str(corpus)], kb="office", rag=rag).version == 2
    index = store_for(rag).load("office")
    assert index.lexical is not None and index.lexical.rows == index.manifest.chunks
    assert best("QQ-1000", "hybrid") == "printer.md#qq-1000"
    assert best(code, "hybrid") == "printer.md#e-7144"
