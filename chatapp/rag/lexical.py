"""Lexical retrieval: BM25 over the chunks of one index version (the `bm25s` package).

Words are lower-cased, English stop words ("how", "do", "the"...) dropped and the rest
stemmed (Snowball, via PyStemmer), so "pruning" matches "prune". The index is built from
the same text that is embedded (title, section, chunk) and saved in the version folder
beside the FAISS index (`lexical/`), so both always describe the same chunks and swap
together.

Why not PostgreSQL full-text search: indexes are versioned folders on disk that
retrieval replicas load and swap without a database (the default database is SQLite,
and replicas hold no database connection); a BM25 index stored in the same folder keeps
dense and lexical search on exactly the same version.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FOLDER = "lexical"  # inside an index version
_LANGUAGE = "english"


@functools.cache
def _stemmer() -> Any:
    import Stemmer  # PyStemmer

    return Stemmer.Stemmer(_LANGUAGE)


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """The BM25 terms of each text (lower case, no stop words, stemmed)."""
    import bm25s

    tokens: list[list[str]] = bm25s.tokenize(
        list(texts), stopwords="en_plus", stemmer=_stemmer(), return_ids=False, show_progress=False
    )
    return tokens


class LexicalIndex:
    """BM25 scores of chunks (rows of the version, in index order) for a query."""

    def __init__(self, retriever: Any, rows: int) -> None:
        self._retriever = retriever
        self.rows = rows

    @classmethod
    def build(cls, texts: Sequence[str]) -> LexicalIndex:
        import bm25s

        retriever = bm25s.BM25()
        if texts:
            retriever.index(tokenize(texts), show_progress=False)
        return cls(retriever, len(texts))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "rows").write_text(str(self.rows))
        if self.rows:
            self._retriever.save(str(folder))

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        import bm25s

        rows = int((folder / "rows").read_text())
        retriever = bm25s.BM25.load(str(folder)) if rows else bm25s.BM25()
        return cls(retriever, rows)

    def search(self, query: str, *, depth: int) -> list[tuple[int, float]]:
        """Up to `depth` (row, BM25 score) pairs, best first; only rows sharing a term
        with the query (score > 0)."""
        if not self.rows:
            return []
        vocab: dict[str, int] = self._retriever.vocab_dict
        terms = [t for t in tokenize([query])[0] if t in vocab]
        if not terms:
            return []
        scores = np.asarray(self._retriever.get_scores(terms), dtype=np.float32)
        depth = min(depth, len(scores))
        top = np.argpartition(-scores, depth - 1)[:depth]
        ranked = sorted(((int(i), float(scores[i])) for i in top), key=lambda p: (-p[1], p[0]))
        return [(i, s) for i, s in ranked if s > 0]
