"""The ONNX Runtime embedders (float32 and int8) against sentence-transformers on
PyTorch: the same model exported locally, vectors that agree (cosine > 0.999 in float32,
> 0.99 for English text in int8), the same nearest texts, and an export made once and reused;
the graph and its quantization as chosen for speed, transformers' token ids without
transformers, vectors independent of their neighbours, no PyTorch at start-up."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from chatapp.config import RagSettings
from chatapp.rag.embedder import Embedder, default_model_path, embedder_for, resolve_backend
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


def test_the_tokenizer_matches_transformers() -> None:
    """The encoder reads tokenizer.json with `tokenizers` (no transformers import): the
    same ids as transformers' tokenizer, truncated at max_seq_length (256 here)."""
    from transformers import AutoTokenizer

    from chatapp.rag.onnx_encoder import _tokenizer
    from chatapp.rag.onnx_export import SentenceModel

    spec = SentenceModel.read(default_model_path())
    texts = [*TEXTS, "word " * 1000]
    ids, types = _tokenizer(spec)(texts)
    auto = AutoTokenizer.from_pretrained(str(spec.transformer), local_files_only=True)
    expected = auto(texts, truncation=True, max_length=spec.max_seq_length)
    assert ids == expected["input_ids"] and types == expected["token_type_ids"]
    assert len(ids[-1]) == spec.max_seq_length == 256


def test_the_export_traces_eager_attention_and_quantizes_the_weights(cache: Path) -> None:
    """The float graph has eager attention (no SDPA NaN guards, which run slower); int8
    covers the 36 weight MatMuls of the 6 layers, the 12 products of activations inside
    attention stay float."""
    import onnx

    model = default_model_path()
    ops = {
        quantized: Counter(n.op_type for n in onnx.load(str(onnx_file(model, cache_dir=cache,
                                                                quantized=quantized))).graph.node)
        for quantized in (False, True)
    }  # fmt: skip
    assert ops[False]["MatMul"] == 48 and ops[False]["Softmax"] == 6 and not ops[False]["IsNaN"]
    assert ops[True]["MatMulInteger"] == 36 and ops[True]["MatMul"] == 12


def test_one_thread_embeds_each_text_alike_alone_or_with_others(cache: Path) -> None:
    """A one-thread CPU embedder (an index build's actor) gives every text a forward pass
    of its own, so an int8 vector (activations quantized with one scale per pass) does not
    depend on the texts it was embedded with; with more threads passes hold up to
    CPU_PASS_TOKENS tokens."""
    from chatapp.rag.onnx_encoder import CPU_PASS_TOKENS

    embedder = Embedder(backend="onnx-int8", cache_dir=cache, threads=1, device="cpu")
    together = embedder.encode(TEXTS, batch_size=64)
    for i, text in enumerate(TEXTS):
        assert np.array_equal(embedder.encode([text])[0], together[i])
    shared = Embedder(backend="onnx-int8", cache_dir=cache, threads=2, device="cpu")
    assert shared._model.pass_tokens == CPU_PASS_TOKENS


def test_the_onnx_embedder_starts_without_torch(cache: Path) -> None:
    """An embedding actor of an index build loads neither PyTorch nor transformers (their
    imports take seconds), where no NVIDIA driver asks for PyTorch's view of the GPUs."""
    import subprocess
    import sys

    from chatapp.rag.embedder import _nvidia_driver

    if _nvidia_driver():
        pytest.skip("with an NVIDIA driver the default device is asked of PyTorch")
    onnx_file(default_model_path(), cache_dir=cache, quantized=True)  # exported here first
    script = (
        "import sys; from pathlib import Path; from chatapp.rag.embedder import Embedder; "
        f"e = Embedder(backend='auto', cache_dir=Path({str(cache)!r}), threads=1); "
        "e.encode(['a question']); "
        "print(e.backend, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert out.stdout.split() == ["onnx-int8", "False", "False"], out.stderr[-2000:]
