"""Sentence embeddings on ONNX Runtime: the model's own tokenizer, the exported
transformer (`chatapp.rag.onnx_export`), then the pooling its sentence-transformers
folder declares, as sentence-transformers does it, and L2 normalisation.

The tokenizer is the model's `tokenizer.json` run by the `tokenizers` library (Rust)
directly, as transformers' fast tokenizer runs it, without importing transformers (and
with it PyTorch: seconds of start-up for every embedding actor of an index build). A
folder without `tokenizer.json` is tokenized by transformers' AutoTokenizer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from chatapp.rag.onnx_export import SentenceModel, onnx_file

logger = logging.getLogger(__name__)

Tokens = list[list[int]]

# On CPUs a forward pass runs fastest with few tokens (its activations stay in the core's
# cache): one thread of the 2-core AMD EPYC (Zen 5) here embeds the docs' chunks (150
# tokens on average) in int8 at 111 chunks/s in passes of up to 256 tokens and 109 one
# text a pass, against 79 in passes of 64 chunks (bench/rag.py). Alone on one thread, as
# in an index build's actors, every text runs alone: its int8 vector (activations are
# quantized with one scale per pass) does not depend on the texts it was embedded with,
# and an index builds the same every time. Several threads need the bigger passes to
# share out. GPUs want big passes.
CPU_PASS_TOKENS = 256


class OnnxEncoder:
    def __init__(
        self,
        model_path: str,
        *,
        cache_dir: Path,
        quantized: bool,
        device: str = "cpu",
        threads: int | None = None,
        file: Path | None = None,
    ) -> None:
        """`file`: an ONNX file of this model to run instead of the exported one."""
        import onnxruntime as ort

        self.spec = SentenceModel.read(model_path)
        self.file = file or onnx_file(model_path, cache_dir=cache_dir, quantized=quantized)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError(
                    "RAG_EMBEDDING_DEVICE is CUDA but this ONNX Runtime has no CUDA provider: "
                    "set RAG_EMBEDDING_BACKEND=torch (or auto) for GPUs"
                )
            index = device.partition(":")[2] or "0"
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": int(index)})]
            self.pass_tokens: int | None = None
        else:
            providers = ["CPUExecutionProvider"]
            self.pass_tokens = 1 if threads == 1 else CPU_PASS_TOKENS  # 1: a text a pass
        self._session = ort.InferenceSession(str(self.file), options, providers=providers)
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._tokenize = _tokenizer(self.spec)
        self.dimension = int(self._session.get_outputs()[0].shape[-1])

    def encode(self, texts: list[str], *, batch_size: int) -> npt.NDArray[np.float32]:
        """Embeddings in the order of `texts`. The texts are tokenized at once, then run
        in order of token count (longest first) in forward passes of up to `batch_size`
        texts and `pass_tokens` tokens (a longer text runs alone), each padded to its
        longest text: texts of about the same length, little padding."""
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if self.spec.lowercase:
            texts = [t.lower() for t in texts]
        ids, types = self._tokenize(texts)
        lengths = np.array([len(i) for i in ids])
        order = np.argsort(-lengths, kind="stable")
        start = 0
        while start < len(texts):
            size = batch_size
            if self.pass_tokens:  # the first text of a pass is its longest
                size = max(1, min(size, self.pass_tokens // max(1, int(lengths[order[start]]))))
            rows = order[start : start + size]
            start += size
            feeds = _padded([ids[i] for i in rows], [types[i] for i in rows])
            hidden = self._session.run(None, {name: feeds[name] for name in self._inputs})[0]
            out[rows] = self._pool(hidden, feeds["attention_mask"])
        return out

    def _pool(
        self, hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        if self.spec.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)  # always: inner product = cosine
        normalised: npt.NDArray[np.float32] = (pooled / np.clip(norms, 1e-12, None)).astype(
            np.float32
        )
        return normalised


def _padded(ids: Tokens, types: Tokens) -> dict[str, npt.NDArray[np.int64]]:
    """Model inputs of one forward pass, padded on the right to the longest text (pad
    id 0, masked out: the pooling and the attention both ignore padded positions)."""
    width = max(len(i) for i in ids)
    feeds = {
        name: np.zeros((len(ids), width), dtype=np.int64)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    }
    for row, (tokens, kinds) in enumerate(zip(ids, types, strict=True)):
        feeds["input_ids"][row, : len(tokens)] = tokens
        feeds["token_type_ids"][row, : len(tokens)] = kinds
        feeds["attention_mask"][row, : len(tokens)] = 1
    return feeds


def _tokenizer(spec: SentenceModel) -> Any:
    """A function from texts to (token ids, token type ids), special tokens added and
    truncated to the model's `max_seq_length`, unpadded."""
    path = spec.transformer / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=spec.max_seq_length)

        def fast(texts: list[str]) -> tuple[Tokens, Tokens]:
            encodings = tokenizer.encode_batch(texts)
            return [e.ids for e in encodings], [e.type_ids for e in encodings]

        return fast
    from transformers import AutoTokenizer

    auto: Any = AutoTokenizer.from_pretrained(str(spec.transformer), local_files_only=True)

    def slow(texts: list[str]) -> tuple[Tokens, Tokens]:
        tokens = auto(texts, truncation=True, max_length=spec.max_seq_length)
        ids = tokens["input_ids"]
        return ids, tokens.get("token_type_ids") or [[0] * len(i) for i in ids]

    return slow
