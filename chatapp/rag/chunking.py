"""Token-aware chunking with overlap, counted with the embedding model's own tokenizer
(langchain-text-splitters' recursive splitter: paragraphs, then lines, then words)."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from chatapp.rag.documents import Document


@dataclass(frozen=True, slots=True)
class Chunk:
    """One retrievable piece of a document; a row of the index's chunks.parquet."""

    chunk_id: str
    source: str  # the document's name, e.g. "docs/configuration.md"
    sha256: str  # content hash of the whole source file
    title: str
    section: str  # heading of the section it belongs to
    anchor: str
    position: int  # 0-based chunk number within the document
    start: int  # character span in the document's text
    end: int
    text: str

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    def embedding_text(self) -> str:
        """What is embedded: where the text sits, then the text."""
        where = f"{self.title} — {self.section}" if self.section else self.title
        return f"{where}\n\n{self.text}"


def embedding_text(row: dict[str, Any]) -> str:
    """`Chunk.embedding_text` of a chunk row."""
    title, section = row["title"], row["section"]
    where = f"{title} — {section}" if section else title
    return f"{where}\n\n{row['text']}"


class Chunker:
    def __init__(self, tokenizer: Any, *, chunk_tokens: int, overlap: int) -> None:
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        if overlap >= chunk_tokens:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        self.tokenizer = tokenizer
        self.chunk_tokens = chunk_tokens
        self._splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            tokenizer, chunk_size=chunk_tokens, chunk_overlap=overlap
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.tokenize(text))

    def split(self, doc: Document) -> list[Chunk]:
        chunks: list[Chunk] = []
        for section in doc.sections:
            # The heading line is not split off as a chunk of its own: every chunk is
            # embedded with its title and section (`embedding_text`) instead.
            body, skip = section.text, 0
            if section.heading and body.startswith("#"):
                newline = body.find("\n")
                skip = len(body) if newline < 0 else newline + 1
                while skip < len(body) and body[skip] in "\n ":
                    skip += 1
                body = body[skip:]
            if not body.strip():
                continue
            cursor = 0
            for text in self._splitter.split_text(body):
                # Pieces come in order and are substrings of the body (the splitter's own
                # start_index mistakes token overlap for characters, so it is not used).
                found = body.find(text, cursor)
                at = found if found >= 0 else cursor
                cursor = at + 1
                start = section.offset + skip + at
                key = f"{doc.name}\0{doc.sha256}\0{len(chunks)}".encode()
                chunks.append(
                    Chunk(
                        chunk_id=hashlib.sha1(key, usedforsecurity=False).hexdigest()[:16],
                        source=doc.name,
                        sha256=doc.sha256,
                        title=doc.title,
                        section=section.heading,
                        anchor=section.anchor,
                        position=len(chunks),
                        start=start,
                        end=start + len(text),
                        text=text,
                    )
                )
        return chunks


@functools.lru_cache(maxsize=4)
def chunker_for(model: str | None, chunk_tokens: int, overlap: int) -> Chunker:
    """One chunker per process and model (Ray Data workers reuse it across tasks)."""
    from transformers import AutoTokenizer

    from chatapp.rag.embedder import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model), local_files_only=True)
    return Chunker(tokenizer, chunk_tokens=chunk_tokens, overlap=overlap)
