"""The official anthropic SDK works unchanged against ChatApp's /v1/messages: a ChatApp
API key, any model of the catalog (here a fake Anthropic and a fake OpenAI server
speaking the real wire formats, and the simulated self-hosted engine), with ChatApp's
router, limits and usage accounting behind it."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from ray import serve

from actors.client import kill_shards
from chatapp.config import Settings
from deployments.app import build_app
from tests.conftest import REDIS_URL, register_and_login, run_app
from tests.fakes.providers import FakeAnthropic, FakeOpenAI, Reply, Status
from tests.integration.sse import iter_events

APP = "anthropic"
SELF_HOSTED = "smollm2-135m-instruct"
TOKEN_LIMIT = 5000  # per user per minute


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeAnthropic, FakeOpenAI]]:
    upstream_anthropic, upstream_openai = FakeAnthropic().start(), FakeOpenAI().start()
    yield upstream_anthropic, upstream_openai  # type: ignore[misc]
    upstream_anthropic.stop()
    upstream_openai.stop()


@pytest.fixture(scope="module")
def app(
    chat_app: str, app_overrides: dict[str, Any], fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> Iterator[str]:
    """ChatApp with 'claude-fake' (Anthropic wire) as primary, 'gpt-fake' (OpenAI wire)
    and the simulated self-hosted engine, and a per-user tokens-per-minute limit."""
    upstream_anthropic, upstream_openai = fakes
    overrides = copy.deepcopy(app_overrides)
    overrides["shards"] = {"count": 1, "name_prefix": f"{APP}-{uuid.uuid4().hex[:6]}"}
    overrides["redis"] = {"url": REDIS_URL, "key_prefix": f"chatapp-test-{uuid.uuid4().hex[:8]}:"}
    overrides["llm"] = {"engine": "simulated", "simulated_reply_tokens": 8}
    overrides["auth"]["chat_token_limit"] = f"{TOKEN_LIMIT}/minute"
    overrides["providers"] = {
        "anthropic_api_key": "sk-ant-test",
        "anthropic_base_url": upstream_anthropic.base_url,
        "openai_api_key": "sk-test",
        "openai_base_url": upstream_openai.base_url,
        "models": [
            {
                "name": "claude-fake",
                "provider": "anthropic",
                "provider_model": "claude-x",
                "context_window": 16000,
                "input_price_per_mtok": 3.0,
                "output_price_per_mtok": 15.0,
            },
            {
                "name": "gpt-fake",
                "provider": "openai",
                "provider_model": "gpt-x",
                "context_window": 16000,
            },
        ],
        "primary": "claude-fake",
        "retry_attempts": 1,
        "breaker_threshold": 1000,
    }
    url = run_app(build_app(overrides), name=APP, route_prefix=f"/{APP}", base_url=chat_app)
    yield url
    serve.delete(APP)
    kill_shards(Settings.from_overrides(overrides))


@pytest.fixture
def account(app: str) -> tuple[dict[str, str], str]:
    """A new user: their login header (for /api) and an API key (for the SDK)."""
    login = register_and_login(app)
    created = httpx.post(f"{app}/api/keys", json={"name": "sdk"}, headers=login, timeout=30)
    assert created.status_code == 201, created.text
    return login, created.json()["key"]


@pytest.fixture
def claude(fakes: tuple[FakeAnthropic, FakeOpenAI]) -> FakeAnthropic:
    fakes[0].reset()
    return fakes[0]


@pytest.fixture
def gpt(fakes: tuple[FakeAnthropic, FakeOpenAI]) -> FakeOpenAI:
    fakes[1].reset()
    return fakes[1]


def sdk(app: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=app, api_key=key, max_retries=0)


def test_a_message_through_the_sdk_with_its_system_prompt_and_usage_reported(
    app: str, account: tuple[dict[str, str], str], claude: FakeAnthropic
) -> None:
    login, key = account
    claude.enqueue(Reply("Paris is the capital of France."))
    message = sdk(app, key).messages.create(
        model="claude-fake",
        max_tokens=64,
        system="You answer in one sentence.",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == "claude-fake"
    assert [(b.type, b.text) for b in message.content] == [  # type: ignore[union-attr]
        ("text", "Paris is the capital of France.")
    ]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.output_tokens == 6 and message.usage.input_tokens > 0

    upstream = claude.requests[-1].body  # what ChatApp asked its model
    assert upstream["system"] == "You answer in one sentence."
    assert upstream["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert upstream["max_tokens"] == 64

    usage = httpx.get(f"{app}/api/usage", headers=login, timeout=30).json()
    assert usage["replies"] == 1
    assert usage["completion_tokens"] == 6
    assert usage["prompt_tokens"] == message.usage.input_tokens
    assert usage["by_model"][0]["model"] == "claude-fake" and usage["cost_usd"] > 0


def test_the_primary_down_auto_falls_back_to_the_self_hosted_model(
    app: str, account: tuple[dict[str, str], str], claude: FakeAnthropic
) -> None:
    _, key = account
    claude.enqueue(Status(503, message="overloaded"))
    message = sdk(app, key).messages.create(
        model="auto", max_tokens=30, messages=[{"role": "user", "content": "Hello?"}]
    )
    assert len(claude.requests) == 1  # the primary was asked first
    assert message.model == SELF_HOSTED and message.stop_reason == "end_turn"
    assert message.content[0].text  # type: ignore[union-attr]
    extra = message.usage.model_extra or {}
    assert extra["fallback_from"] == "claude-fake" and extra["provider"] == "self-hosted"


def test_api_keys_work_as_x_api_key_and_as_a_bearer_token(
    app: str, account: tuple[dict[str, str], str], claude: FakeAnthropic
) -> None:
    _, key = account
    bearer = anthropic.Anthropic(base_url=app, auth_token=key, max_retries=0)
    reply = bearer.messages.create(
        model="claude-fake", max_tokens=16, messages=[{"role": "user", "content": "Hi"}]
    )
    assert reply.content
    body = {
        "model": "claude-fake",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    for headers in (
        {"x-api-key": key, "anthropic-version": "2023-06-01"},
        {"Authorization": f"Bearer {key}", "anthropic-beta": "some-beta-2025-01-01"},
    ):
        answered = httpx.post(f"{app}/v1/messages", json=body, headers=headers, timeout=60)
        assert answered.status_code == 200, answered.text
        assert answered.headers["request-id"] == answered.headers["x-request-id"]
        assert answered.json()["content"][0]["text"] == "Hello from the fake provider."


async def test_async_streaming_with_the_sdk_helper(
    app: str, account: tuple[dict[str, str], str], claude: FakeAnthropic
) -> None:
    _, key = account
    claude.enqueue(Reply("one two three four five"))
    client = anthropic.AsyncAnthropic(base_url=app, api_key=key, max_retries=0)
    async with client.messages.stream(
        model="claude-fake",
        max_tokens=64,
        messages=[{"role": "user", "content": "Count to five in words."}],
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    await client.close()
    assert "".join(pieces) == "one two three four five" and len(pieces) >= 2
    assert final.content[0].text == "one two three four five"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5 and final.usage.input_tokens > 0
    assert claude.requests[-1].body["stream"] is True  # streamed from the model too


def test_a_streamed_answer_is_anthropics_event_sequence(
    app: str, account: tuple[dict[str, str], str], claude: FakeAnthropic
) -> None:
    _, key = account
    claude.enqueue(Reply("alpha beta gamma"))
    events = list(
        sdk(app, key).messages.create(
            model="claude-fake",
            max_tokens=32,
            messages=[{"role": "user", "content": "Three Greek letters?"}],
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    deltas = kinds.count("content_block_delta")
    assert deltas >= 1
    assert kinds == [
        "message_start",
        "content_block_start",
        *(["ping"] if "ping" in kinds else []),
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")  # type: ignore[union-attr]
    assert text == "alpha beta gamma"
    done = next(e for e in events if e.type == "message_delta")
    assert done.delta.stop_reason == "end_turn" and done.usage.output_tokens == 3  # type: ignore[union-attr]


def test_stop_sequences_reach_the_model_and_end_the_answer(
    app: str, account: tuple[dict[str, str], str], claude: FakeAnthropic
) -> None:
    _, key = account
    claude.enqueue(Reply("one two three STOP four five"))
    message = sdk(app, key).messages.create(
        model="claude-fake",
        max_tokens=64,
        stop_sequences=["STOP", "never"],
        messages=[{"role": "user", "content": "Count."}],
    )
    assert message.content[0].text == "one two three "  # type: ignore[union-attr]
    assert claude.requests[-1].body["stop_sequences"] == ["STOP", "never"]
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "STOP"
    # streamed: the message_delta says which sequence ended it
    claude.enqueue(Reply("alpha beta never gamma"))
    with sdk(app, key).messages.stream(
        model="claude-fake",
        max_tokens=64,
        stop_sequences=["STOP", "never"],
        messages=[{"role": "user", "content": "Count."}],
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "alpha beta "  # type: ignore[union-attr]
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "never"


def test_a_model_stopped_by_max_tokens_says_so(
    app: str, account: tuple[dict[str, str], str], claude: FakeAnthropic
) -> None:
    _, key = account
    client = sdk(app, key)
    # the self-hosted model (simulated: 8 tokens) cut at 3 tokens
    cut = client.messages.create(
        model=SELF_HOSTED, max_tokens=3, messages=[{"role": "user", "content": "Tell me more."}]
    )
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    assert cut.model == SELF_HOSTED
    whole = client.messages.create(
        model=SELF_HOSTED, max_tokens=30, messages=[{"role": "user", "content": "Tell me more."}]
    )
    assert whole.stop_reason == "end_turn" and whole.usage.output_tokens == 8
    # a provider that reports max_tokens, streamed
    claude.enqueue(Reply("cut short", finish_reason="length"))
    with client.messages.stream(
        model="claude-fake", max_tokens=2, messages=[{"role": "user", "content": "Go on."}]
    ) as stream:
        assert stream.get_final_message().stop_reason == "max_tokens"


def test_temperature_top_p_and_stop_sequences_reach_an_openai_model(
    app: str, account: tuple[dict[str, str], str], gpt: FakeOpenAI
) -> None:
    """Sampling fields this SDK generation no longer sends (older SDKs and raw HTTP do)
    are honoured, here by a model behind the OpenAI wire format."""
    _, key = account
    answered = httpx.post(
        f"{app}/v1/messages",
        json={
            "model": "gpt-fake",
            "max_tokens": 20,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,  # not something ChatApp's models take: ignored
            "stop_sequences": ["\n\n"],
            "metadata": {"user_id": "someone"},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        },
        headers={"x-api-key": key},
        timeout=60,
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["model"] == "gpt-fake"
    upstream = gpt.requests[-1].body
    assert upstream["temperature"] == 0.2 and upstream["top_p"] == 0.9
    assert upstream["stop"] == ["\n\n"]
    assert upstream["messages"][-1] == {"role": "user", "content": "Hi"}


def anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    message: str = body["error"]["message"]
    assert message
    return message


def test_errors_come_in_anthropics_envelope(app: str, account: tuple[dict[str, str], str]) -> None:
    _, key = account
    ask = {"model": "claude-fake", "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.Client(base_url=app, headers={"x-api-key": key}, timeout=60) as http:
        missing = http.post("/v1/messages", json=ask)
        assert "max_tokens" in anthropic_error(missing, 400, "invalid_request_error")
        document = http.post(
            "/v1/messages",
            json={
                **ask,
                "max_tokens": 16,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "document", "source": {"type": "text", "data": "x"}}],
                    }
                ],
            },
        )
        assert "document blocks are not supported" in anthropic_error(
            document, 400, "invalid_request_error"
        )
        thinking = http.post(
            "/v1/messages",
            json={**ask, "max_tokens": 16, "thinking": {"type": "enabled", "budget_tokens": 9}},
        )
        assert "thinking" in anthropic_error(thinking, 400, "invalid_request_error")
        not_json = http.post(
            "/v1/messages", content=b"{", headers={"content-type": "application/json"}
        )
        anthropic_error(not_json, 400, "invalid_request_error")

    client = sdk(app, key)
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(
            model="claude-nope", max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
        )
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "not found" in unknown.value.message

    with pytest.raises(anthropic.AuthenticationError) as bad_key:
        sdk(app, "cak_not-a-real-key").messages.create(
            model="claude-fake", max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
        )
    assert bad_key.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert bad_key.value.request_id == bad_key.value.response.headers["x-request-id"]


def test_a_rate_limited_user_gets_429_with_retry_after(
    app: str, account: tuple[dict[str, str], str], claude: FakeAnthropic
) -> None:
    """An answer on its way holds its max_tokens against the user's tokens per minute:
    while it streams (a slow model: a token every 30 s), the next request is refused."""
    _, key = account
    claude.enqueue(Reply("slow answer that takes minutes", token_delay_s=30))
    ask = {"model": "claude-fake", "messages": [{"role": "user", "content": "Write a story."}]}
    with httpx.stream(
        "POST",
        f"{app}/v1/messages",
        json={**ask, "max_tokens": TOKEN_LIMIT, "stream": True},
        headers={"x-api-key": key},
        timeout=60,
    ) as streaming:
        assert streaming.status_code == 200  # answering: its tokens are held
        with pytest.raises(anthropic.RateLimitError) as limited:
            sdk(app, key).messages.create(max_tokens=16, **ask)  # type: ignore[arg-type]
    assert limited.value.status_code == 429
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "too many tokens" in limited.value.message
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60
    assert len(claude.requests) == 1  # the refused request reached no model


def test_a_provider_failing_mid_stream_ends_it_with_an_error_event(
    app: str, account: tuple[dict[str, str], str], claude: FakeAnthropic
) -> None:
    _, key = account
    claude.enqueue(Reply("one two three four five six", cut_after=2))
    with httpx.stream(
        "POST",
        f"{app}/v1/messages",
        json={
            "model": "claude-fake",
            "max_tokens": 64,
            "stream": True,
            "messages": [{"role": "user", "content": "Count."}],
        },
        headers={"x-api-key": key},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        events = list(iter_events(response))
    kinds = [e.event for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert "content_block_delta" in kinds and "message_stop" not in kinds
    assert kinds[-1] == "error"
    error = events[-1].json()
    assert error["type"] == "error" and error["error"]["type"] in ("api_error", "overloaded_error")
    assert error["error"]["message"]

    claude.enqueue(Reply("one two three four five six", cut_after=2))
    with pytest.raises(anthropic.APIStatusError):  # the SDK raises the error event
        with sdk(app, key).messages.stream(
            model="claude-fake", max_tokens=64, messages=[{"role": "user", "content": "Count."}]
        ) as stream:
            for _ in stream.text_stream:
                pass
