"""Document loaders: .md, .txt, .html and .pdf bytes in, clean text split by section out.

Sections follow the document's own structure (Markdown headings, HTML headings, PDF
pages) so chunks never straddle two topics and each one can say where it came from.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from chatapp.errors import InvalidRequest

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf")

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


class DocumentError(InvalidRequest):
    """A source file cannot be read as a document (corrupt PDF, unknown type, ...)."""

    code = "unreadable_document"


class NoDocuments(DocumentError):
    """Not one of a build's files could be read: nothing was written."""

    def __init__(self, file_errors: dict[str, str]) -> None:
        self.file_errors = file_errors
        detail = "; ".join(file_errors.values())
        super().__init__(f"no file could be read, nothing was written: {detail}")


@dataclass(frozen=True, slots=True)
class Section:
    heading: str  # "" for text before the first heading
    anchor: str  # slug of the heading ("page-3" for PDF pages)
    text: str
    offset: int  # where `text` starts in the document's full text


@dataclass(frozen=True, slots=True)
class Document:
    name: str  # how the source is shown and identified, e.g. "docs/configuration.md"
    title: str
    sha256: str
    sections: list[Section] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_supported(path: str) -> bool:
    return path.lower().endswith(SUPPORTED_SUFFIXES)


def slugify(heading: str) -> str:
    """GitHub-style anchor of a heading: lower case, punctuation dropped, spaces to '-'."""
    text = unicodedata.normalize("NFKD", heading).lower()
    text = re.sub(r"[`*_\[\]()]", "", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.strip().replace(" ", "-")


def clean(text: str) -> str:
    """Normalise Unicode and whitespace; drop control characters; keep paragraphs."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def markdown_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(title, [(heading, body)]) of Markdown; headings inside code fences do not count."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    title = ""
    in_fence = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match:
            heading = match.group(2).strip()
            if not title and len(match.group(1)) == 1:
                title = heading
            sections.append((heading, [line]))
        else:
            sections[-1][1].append(line)
    # A heading with nothing under it (before its subsections) is not a section.
    return title, [
        (h, "\n".join(lines).strip())
        for h, lines in sections
        if "\n".join(lines[1:] if h else lines).strip()
    ]


def _html_to_markdown(data: bytes) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "nav", "footer"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.head:
        soup.head.decompose()
    for level in range(1, 7):
        for tag in soup.find_all(f"h{level}"):
            tag.replace_with(f"\n\n{'#' * level} {tag.get_text(' ', strip=True)}\n\n")
    for tag in soup.find_all(["p", "div", "li", "tr", "pre", "br", "section", "article"]):
        tag.insert_after("\n")
    return title, soup.get_text()


def _pdf_pages(data: bytes, name: str) -> tuple[str, list[str]]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        metadata: Any = reader.metadata or {}
        title = str(metadata.get("/Title") or "")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DocumentError(f"{name}: not a readable PDF ({exc})") from exc
    return title, pages


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("latin-1")
        except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes anything
            raise DocumentError(f"{name}: not text ({exc})") from exc


def load_document(name: str, data: bytes) -> Document:
    """Parse one file's bytes by its extension. `DocumentError` says which file and why."""
    suffix = PurePosixPath(name).suffix.lower()
    fallback_title = PurePosixPath(name).stem.replace("-", " ").replace("_", " ")
    raw: list[tuple[str, str, str]] = []  # (heading, anchor, text)
    if suffix == ".pdf":
        title, pages = _pdf_pages(data, name)
        raw = [("", f"page-{i}", clean(t)) for i, t in enumerate(pages, start=1)]
    elif suffix in (".html", ".htm"):
        title, text = _html_to_markdown(data)
        md_title, parts = markdown_sections(clean(text))
        title = title or md_title
        raw = [(h, slugify(h), clean(body)) for h, body in parts]
    elif suffix in (".md", ".markdown"):
        title, parts = markdown_sections(clean(_decode(data, name)))
        raw = [(h, slugify(h), clean(body)) for h, body in parts]
    elif suffix == ".txt":
        title, raw = "", [("", "", clean(_decode(data, name)))]
    else:
        raise DocumentError(f"{name}: unsupported file type; use one of {SUPPORTED_SUFFIXES}")
    sections: list[Section] = []
    offset = 0
    for heading, anchor, text in raw:
        if text:
            sections.append(Section(heading=heading, anchor=anchor, text=text, offset=offset))
            offset += len(text) + 2
    if not sections:
        raise DocumentError(f"{name}: no text could be extracted (a scanned PDF needs OCR)")
    return Document(
        name=name, title=title or fallback_title, sha256=content_hash(data), sections=sections
    )
