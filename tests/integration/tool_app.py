"""A ChatApp on Ray Serve for the tools-and-images tests (`test_tools_api.py`,
`test_langchain.py`): the fake OpenAI and Anthropic servers as providers, the simulated
engine as the self-hosted model (which takes text only), small image limits.

    gpt-fake      openai       tools and images (the primary of `auto`)
    claude-fake   anthropic    tools and images (the fallback)
    gpt-text      openai       tools, no images (`supports_images: false`)
    smollm2-...   self-hosted  text only

Import the fixtures into a test module: `from tests.integration.tool_app import ...`.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from ray import serve

from actors.client import kill_shards
from chatapp.config import Settings
from deployments.app import build_app
from tests.conftest import REDIS_URL, register_and_login, run_app
from tests.fakes.providers import FakeAnthropic, FakeOpenAI

SELF_HOSTED = "smollm2-135m-instruct"
MAX_IMAGE_BYTES = 1024
MAX_IMAGES = 2


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeOpenAI, FakeAnthropic]]:
    oa, an = FakeOpenAI().start(), FakeAnthropic().start()
    yield oa, an  # type: ignore[misc]
    oa.stop()
    an.stop()


@pytest.fixture(scope="module")
def tools_url(
    chat_app: str, app_overrides: dict[str, Any], fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> Iterator[str]:
    oa, an = fakes
    name = f"tools{uuid.uuid4().hex[:6]}"
    model = {"context_window": 16000, "input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0}
    overrides = copy.deepcopy(app_overrides)
    overrides |= {
        "shards": {"count": 1, "name_prefix": f"{name}-shard"},
        "redis": {"url": REDIS_URL, "key_prefix": f"chatapp-test-{uuid.uuid4().hex[:8]}:"},
        "llm": {"engine": "simulated", "simulated_reply_tokens": 8},
        "chat": {"max_image_bytes": MAX_IMAGE_BYTES, "max_images": MAX_IMAGES},
        "providers": {
            "openai_api_key": "sk-test",
            "openai_base_url": oa.base_url,
            "anthropic_api_key": "sk-ant-test",
            "anthropic_base_url": an.base_url,
            "models": [
                {"name": "gpt-fake", "provider": "openai", "provider_model": "gpt-x", **model},
                {
                    "name": "claude-fake",
                    "provider": "anthropic",
                    "provider_model": "claude-x",
                    **model,
                },
                {
                    "name": "gpt-text",
                    "provider": "openai",
                    "provider_model": "gpt-text-x",
                    "supports_images": False,
                    **model,
                },
            ],
            "primary": "gpt-fake",
            "fallback": ["claude-fake"],
            "retry_attempts": 1,
            "breaker_threshold": 1000,
        },
    }
    base = chat_app.rstrip("/")
    yield run_app(build_app(overrides), name=name, route_prefix=f"/{name}", base_url=base)
    serve.delete(name)
    kill_shards(Settings.from_overrides(overrides))


@pytest.fixture(scope="module")
def token(tools_url: str) -> str:
    return register_and_login(tools_url)["Authorization"].removeprefix("Bearer ")


@pytest.fixture
def sdk(tools_url: str, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tools_url}/v1", api_key=token, max_retries=0, timeout=60)


@pytest.fixture
def providers(fakes: tuple[FakeOpenAI, FakeAnthropic]) -> tuple[FakeOpenAI, FakeAnthropic]:
    for server in fakes:
        server.reset()
    return fakes
