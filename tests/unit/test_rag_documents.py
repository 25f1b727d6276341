"""Loaders and chunking: each format becomes clean sections; chunks fit the model."""

from __future__ import annotations

import itertools

import pytest

from chatapp.rag.documents import DocumentError, load_document, slugify
from tests.fakes.corpus import BEES_HTML, COMPOST_PDF_LINES, GARDEN_MD, make_pdf


def test_markdown_sections_follow_headings_not_code_fences() -> None:
    text = GARDEN_MD + "\n## Tools\n\n```bash\n# not a heading\nls\n```\n"
    doc = load_document("docs/garden.md", text.encode())
    assert doc.title == "Garden handbook"
    assert [s.heading for s in doc.sections] == ["Watering tomatoes", "Pruning roses", "Tools"]
    assert doc.sections[2].anchor == "tools" and "# not a heading" in doc.sections[2].text
    assert doc.text[doc.sections[1].offset :].startswith("## Pruning roses")


def test_html_drops_scripts_and_keeps_headings() -> None:
    doc = load_document("bees.html", BEES_HTML.encode())
    assert doc.title == "Beekeeping basics"
    assert [s.anchor for s in doc.sections] == ["hive-inspection", "swarm-prevention"]
    assert "do not index" not in doc.text and "color: red" not in doc.text
    assert "Home | About" not in doc.text  # navigation is not content


def test_pdf_pages_become_sections() -> None:
    doc = load_document("compost.pdf", make_pdf(COMPOST_PDF_LINES))
    assert [s.anchor for s in doc.sections] == ["page-1"]
    assert "Turn the heap every two weeks" in doc.text


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "broken.pdf: not a readable PDF"),
        ("empty.md", b"   \n\n", "empty.md: no text could be extracted"),
        ("image.png", b"\x89PNG", "image.png: unsupported file type"),
    ],
)
def test_unreadable_files_say_which_and_why(name: str, data: bytes, message: str) -> None:
    with pytest.raises(DocumentError) as info:
        load_document(name, data)
    assert info.value.message.startswith(message)


def test_slugs_match_github_anchors() -> None:
    assert slugify("Knowledge base settings (`RAG_`)") == "knowledge-base-settings-rag"
    assert slugify("Deploy ChatApp on KubeRay") == "deploy-chatapp-on-kuberay"


def test_chunks_fit_the_token_budget_and_overlap() -> None:
    from chatapp.rag.chunking import chunker_for

    chunker = chunker_for(None, 40, 10)
    sentences = " ".join(f"Sentence number {i} talks about tomatoes and roses." for i in range(40))
    doc = load_document("long.md", f"# Long\n\n## Part\n\n{sentences}\n".encode())
    chunks = chunker.split(doc)
    assert len(chunks) > 5
    assert all(chunker.count_tokens(c.text) <= 40 for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end, "neighbouring chunks overlap"
    for c in chunks:
        assert doc.text[c.start : c.end] == c.text
        assert c.section == "Part" and c.anchor == "part"
    assert len({c.chunk_id for c in chunks}) == len(chunks)
