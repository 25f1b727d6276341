"""Sentence embeddings on ONNX Runtime: the model's own tokenizer, the exported
transformer (`chatapp.rag.onnx_export`), then the pooling its sentence-transformers
folder declares, as sentence-transformers does it, and L2 normalisation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from chatapp.rag.onnx_export import SentenceModel, onnx_file

logger = logging.getLogger(__name__)


class OnnxEncoder:
    def __init__(
        self,
        model_path: str,
        *,
        cache_dir: Path,
        quantized: bool,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.spec = SentenceModel.read(model_path)
        self.file = onnx_file(model_path, cache_dir=cache_dir, quantized=quantized)
        options = ort.SessionOptions()
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
        else:
            providers = ["CPUExecutionProvider"]
        self._session = ort.InferenceSession(str(self.file), options, providers=providers)
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._tokenizer: Any = AutoTokenizer.from_pretrained(
            str(self.spec.transformer), local_files_only=True
        )
        self.dimension = int(self._session.get_outputs()[0].shape[-1])

    def encode(self, texts: list[str], *, batch_size: int) -> npt.NDArray[np.float32]:
        """Embeddings in the order of `texts`; forward passes over texts sorted by length
        (longest first), so each pass pads to texts of about the same length."""
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            tokens = self._tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=self.spec.max_seq_length,
                return_tensors="np",
            )
            feeds = {name: np.asarray(tokens[name], dtype=np.int64) for name in self._inputs}
            hidden = self._session.run(None, feeds)[0]
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
