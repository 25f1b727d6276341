"""ONNX exports of a sentence-transformers model, made locally from its own weights.

    <cache_dir>/<model folder name>-<hash of its path and EXPORT_FORMAT>/
        model.onnx        float32: the transformer, exported with torch.onnx
                          (transformers' eager attention)
        model_qint8.onnx  the same, MatMul weights in int8 per output channel
                          (dynamic quantization: activations quantized at run time)

Each is made once, at first use, under a file lock (several Ray actors start at once),
written under a temporary name and renamed into place, so a killed export leaves nothing
half-written. Nothing is downloaded: the weights are read from the model folder on disk.

Not done, because it was slower here: ONNX Runtime's offline transformer fusion
(`onnxruntime.transformers.optimizer`, Attention / SkipLayerNormalization / BiasGelu
operators, QAttention in int8) runs 10-15% slower on one CPU thread in the small
forward passes `chatapp.rag.onnx_encoder` uses (bench/rag.py shows it next to these).

Why not sentence-transformers' own ONNX backend: it exports through `optimum-onnx`,
whose only release needs transformers < 4.58, while this project runs transformers 5
(sentence-transformers 6); `torch.onnx` and ONNX Runtime's quantizer need neither.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

EXPORT_FORMAT = 3  # bumped when the files are made differently: older exports are not reused
FLOAT_FILE = "model.onnx"
INT8_FILE = "model_qint8.onnx"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True, slots=True)
class SentenceModel:
    """What the ONNX encoder needs of a sentence-transformers folder: where the
    transformer and its tokenizer are, how long an input may be, how tokens are pooled."""

    transformer: Path
    max_seq_length: int
    pooling: str  # "mean" or "cls"
    lowercase: bool = False  # sentence-transformers lowercases texts before tokenizing

    @classmethod
    def read(cls, folder: str | Path) -> SentenceModel:
        root = Path(folder)
        modules: list[dict[str, Any]] = json.loads((root / "modules.json").read_text())
        kinds = {m["type"].rsplit(".", 1)[-1]: root / m["path"] for m in modules}
        if "Transformer" not in kinds or "Pooling" not in kinds:
            raise ValueError(
                f"{root}: the ONNX backend needs a Transformer and a Pooling module; "
                "set RAG_EMBEDDING_BACKEND=torch for this model"
            )
        transformer = kinds["Transformer"]
        config = _json(transformer / "sentence_bert_config.json") or _json(
            root / "sentence_bert_config.json"
        )
        pooling = json.loads((kinds["Pooling"] / "config.json").read_text())
        if pooling.get("pooling_mode_mean_tokens"):
            mode = "mean"
        elif pooling.get("pooling_mode_cls_token"):
            mode = "cls"
        else:
            raise ValueError(
                f"{root}: only mean or CLS pooling run on ONNX; set RAG_EMBEDDING_BACKEND=torch"
            )
        return cls(
            transformer=transformer,
            max_seq_length=int(config.get("max_seq_length") or 512),
            pooling=mode,
            lowercase=bool(config.get("do_lower_case")),
        )


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def export_folder(model_path: str, cache_dir: Path) -> Path:
    resolved = str(Path(model_path).resolve())
    digest = hashlib.sha256(f"{resolved}\n{EXPORT_FORMAT}".encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{Path(resolved).name}-{digest}"


def onnx_file(model_path: str, *, cache_dir: Path, quantized: bool) -> Path:
    """The ONNX file of the model at `model_path` (float32 or int8), exported on first use."""
    from filelock import FileLock

    folder = export_folder(model_path, cache_dir)
    target = folder / (INT8_FILE if quantized else FLOAT_FILE)
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".lock")):
        if not (folder / FLOAT_FILE).is_file():
            _write_atomically(folder / FLOAT_FILE, lambda tmp: export(model_path, tmp))
        if quantized and not target.is_file():
            _write_atomically(target, lambda tmp: quantize(folder / FLOAT_FILE, tmp))
    return target


def _write_atomically(target: Path, write: Any) -> None:
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def export(model_path: str, out: Path, *, attention: str = "eager") -> None:
    """Export the transformer of a sentence-transformers folder to ONNX (float32): inputs
    `INPUTS` it takes, output `last_hidden_state`, batch and sequence axes dynamic.

    Attention is traced as transformers' `eager` implementation (the plain
    matmul-softmax-matmul BERT was written as): the graph is smaller than the one
    PyTorch's `sdpa` gives (no NaN guards around the softmax), and runs faster on ONNX
    Runtime, in float32 and in int8 (bench/rag.py measures both)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    logger.info("exporting %s to ONNX (once): %s", model_path, out)
    spec = SentenceModel.read(model_path)
    tokenizer = AutoTokenizer.from_pretrained(str(spec.transformer), local_files_only=True)
    model = AutoModel.from_pretrained(
        str(spec.transformer), local_files_only=True, attn_implementation=attention
    ).eval()
    sample = tokenizer(["an example sentence", "a second, longer example sentence"],
                       padding=True, return_tensors="pt")  # fmt: skip
    names = [n for n in INPUTS if n in sample]

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> Any:
            return self.model(**dict(zip(names, args, strict=True))).last_hidden_state

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with torch.inference_mode():
        torch.onnx.export(
            Hidden(),
            tuple(sample[n] for n in names),
            str(out),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "sequence"}},
            opset_version=17,
            dynamo=False,
        )


def quantize(source: Path, out: Path) -> None:
    """int8 dynamic quantization: the weights of every MatMul in int8, one scale per
    output channel (one per tensor loses too much: cosine to float down to 0.88);
    activations quantized at run time, one scale per forward pass. The embedding tables
    stay float: quantizing them saves no time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logger.info("quantizing %s to int8 (once)", source)
    quantize_dynamic(
        str(source),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
    )
