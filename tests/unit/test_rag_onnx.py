"""The ONNX Runtime embedders (float32 and int8) against sentence-transformers on
PyTorch: the same model exported locally, vectors that agree (cosine > 0.999 in float32,
> 0.99 for English text in int8), the same nearest texts, and an export made once and reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from chatapp.config import RagSettings
from chatapp.rag.embedder import Embedder, embedder_for, resolve_backend
from chatapp.rag.onnx_export import export_folder, onnx_file

TEXTS = [
    "How do I deploy ChatApp on KubeRay?",
    "Prune roses in late winter, just before the buds break.",
    "ZX-4471: the print head overheated; let the printer cool for ten minutes.",
    "Garden handbook — Watering tomatoes\n\n" + "Water the soil, not the leaves. " * 40,
    "",
    "短い日本語の文",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return Embedder(backend="torch").encode(TEXTS)


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_onnx_vectors_match_torch(backend: str, cache: Path, torch_vectors: np.ndarray) -> None:
    embedder = Embedder(backend=backend, cache_dir=cache, threads=1)  # type: ignore[arg-type]
    assert embedder.backend == backend and embedder.dimension == 384
    vectors = embedder.encode(TEXTS, batch_size=4)  # two passes, sorted by length
    assert vectors.shape == torch_vectors.shape and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = (vectors * torch_vectors).sum(axis=1)
    if backend == "onnx":
        assert cosines.min() > 0.999, cosines  # the same float model
    else:  # int8 weights: English text stays close; an empty or Japanese text less so
        assert cosines[:4].min() > 0.99 and cosines.min() > 0.96, cosines
    # The same nearest text for every query, across backends.
    assert ((vectors @ torch_vectors.T).argmax(axis=1) == np.arange(len(TEXTS))).all()
    assert embedder.encode([]).shape == (0, 384)


def test_the_export_is_made_once_and_reused(cache: Path) -> None:
    from chatapp.rag.embedder import default_model_path

    model = default_model_path()
    first = onnx_file(model, cache_dir=cache, quantized=True)
    stamp = first.stat().st_mtime_ns
    again = onnx_file(model, cache_dir=cache, quantized=True)
    assert again == first and again.stat().st_mtime_ns == stamp
    assert first.parent == export_folder(model, cache)
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".tmp")]


def test_settings_choose_the_backend(cache: Path) -> None:
    assert resolve_backend("auto", "cpu") == "onnx-int8"
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("onnx", "cpu") == "onnx"
    embedder = embedder_for(RagSettings(embedding_backend="auto", model_cache_dir=cache))
    assert embedder.backend == "onnx-int8" and embedder.device == "cpu"
