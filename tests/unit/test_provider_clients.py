"""The OpenAI and Anthropic providers, through the official SDKs, against local fake
servers speaking the real wire formats: answers, usage, and every fault mapped to the
error a user (and the router) can act on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx2
import pytest

from chatapp.config import ProvidersSettings
from chatapp.errors import (
    ChatAppError,
    ContextWindowExceeded,
    InvalidRequest,
    ProviderAuth,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ServiceUnavailable,
)
from chatapp.llm.anthropic import AnthropicProvider, to_anthropic
from chatapp.llm.base import ChatMessage, ChatProvider, Finish, SamplingParams, TextDelta
from chatapp.llm.openai import OpenAIProvider
from chatapp.llm.registry import build_providers
from tests.fakes.providers import (
    FakeAnthropic,
    FakeOpenAI,
    FakeProviderServer,
    Hang,
    Malformed,
    Reply,
    Status,
    refused_url,
)

MESSAGES = [
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "Hi"),
    ChatMessage("assistant", "Hello!"),
    ChatMessage("user", "What is the capital of France?"),
]
PARAMS = SamplingParams(max_tokens=32, temperature=0.0)
TIMEOUT = httpx2.Timeout(1.0, connect=1.0)


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture(params=["openai", "anthropic"])
def vendor(
    request: pytest.FixtureRequest, openai_server: FakeOpenAI, anthropic_server: FakeAnthropic
) -> Iterator[tuple[FakeProviderServer, ChatProvider]]:
    server: FakeProviderServer = openai_server if request.param == "openai" else anthropic_server
    server.reset()
    factory = OpenAIProvider if request.param == "openai" else AnthropicProvider
    provider = factory.create(
        name=request.param, api_key="sk-test", base_url=server.base_url, timeout=TIMEOUT
    )
    yield server, provider


async def collect(provider: ChatProvider) -> tuple[str, Finish]:
    parts: list[str] = []
    async for chunk in provider.stream(MESSAGES, PARAMS, model="vendor-model"):
        if isinstance(chunk, TextDelta):
            parts.append(chunk.text)
        else:
            return "".join(parts), chunk
    raise AssertionError("no Finish")


async def test_streams_the_answer_with_usage(
    vendor: tuple[FakeProviderServer, ChatProvider],
) -> None:
    server, provider = vendor
    server.enqueue(Reply("Paris is the capital of France."))
    text, finish = await collect(provider)
    assert text == "Paris is the capital of France."
    assert finish.finish_reason == "stop"
    assert finish.completion_tokens == 6 and finish.prompt_tokens > 0
    assert finish.provider == provider.name
    sent = server.requests[-1]
    assert sent.body["model"] == "vendor-model" and sent.body["stream"] is True
    assert sent.body["max_tokens"] == 32


async def test_a_whole_answer_is_one_non_streamed_call(
    vendor: tuple[FakeProviderServer, ChatProvider],
) -> None:
    """A non-streamed request (`whole`) makes one non-streamed call: the answer comes as
    one delta carrying its token count, with the same usage as a streamed one."""
    server, provider = vendor
    server.enqueue(Reply("Paris is the capital of France.", finish_reason="length"))
    params = SamplingParams(max_tokens=32, temperature=0.0, whole=True)
    chunks = [c async for c in provider.stream(MESSAGES, params, model="vendor-model")]
    assert chunks[0] == TextDelta("Paris is the capital of France.", tokens=6)
    finish = chunks[1]
    assert isinstance(finish, Finish) and len(chunks) == 2
    assert finish.finish_reason == "length" and finish.completion_tokens == 6
    assert finish.prompt_tokens > 0 and finish.provider == provider.name
    sent = server.requests[-1].body
    assert not sent.get("stream") and "stream_options" not in sent
    assert sent["max_tokens"] == 32


async def test_sampling_parameters_reach_the_vendor_that_takes_them(
    openai_server: FakeOpenAI, anthropic_server: FakeAnthropic
) -> None:
    """OpenAI gets temperature, top_p and stop; Anthropic gets the stop sequences and no
    sampling knobs: its API version 2026-10-21 answers 400 to any of them."""
    params = SamplingParams(max_tokens=16, temperature=0.3, top_p=0.9, stop=("END",))
    for server, factory in ((openai_server, OpenAIProvider), (anthropic_server, AnthropicProvider)):
        server.reset()
        provider = factory.create(
            name="vendor", api_key="sk-test", base_url=server.base_url, timeout=TIMEOUT
        )
        async for _ in provider.stream(MESSAGES, params, model="vendor-model"):
            pass
    sent = openai_server.requests[-1].body
    assert sent["temperature"] == 0.3 and sent["top_p"] == 0.9 and sent["stop"] == ["END"]
    sent = anthropic_server.requests[-1].body
    assert sent["stop_sequences"] == ["END"]
    assert not {"temperature", "top_p", "top_k"} & set(sent)


async def test_anthropic_gets_the_system_prompt_apart(
    anthropic_server: FakeAnthropic,
) -> None:
    anthropic_server.reset()
    provider = AnthropicProvider.create(
        name="anthropic", api_key="sk-ant", base_url=anthropic_server.base_url, timeout=TIMEOUT
    )
    await collect(provider)
    body = anthropic_server.requests[-1].body
    headers = anthropic_server.requests[-1].headers
    assert body["system"] == "Be brief."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert "sk-ant" in (headers.get("x-api-key"), headers.get("authorization", "")[7:])
    # turns of one role are merged; a leading assistant turn is dropped
    system, turns = to_anthropic(
        [ChatMessage("assistant", "hi"), ChatMessage("user", "a"), ChatMessage("user", "b")]
    )
    assert system == "" and turns == [{"role": "user", "content": "a\n\nb"}]


async def test_openai_asks_for_usage_in_the_stream(openai_server: FakeOpenAI) -> None:
    openai_server.reset()
    provider = OpenAIProvider.create(
        name="openai", api_key="sk-test", base_url=openai_server.base_url, timeout=TIMEOUT
    )
    await collect(provider)
    body = openai_server.requests[-1].body
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert openai_server.requests[-1].headers["authorization"] == "Bearer sk-test"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Status(500), ProviderError),
        (Status(503), ServiceUnavailable),
        (Status(401, message="bad key"), ProviderAuth),
        (Status(400, message="temperature: must be at most 2"), InvalidRequest),
        (Malformed(), ProviderError),
    ],
)
async def test_faults_map_to_chatapp_errors(
    vendor: tuple[FakeProviderServer, ChatProvider],
    fault: Status | Malformed,
    error: type[ChatAppError],
) -> None:
    server, provider = vendor
    server.enqueue(fault)
    with pytest.raises(error) as caught:
        await collect(provider)
    assert type(caught.value) is error  # not a subclass standing in for it
    assert "sk-test" not in caught.value.message  # keys never leak into messages


async def test_rate_limit_carries_retry_after(
    vendor: tuple[FakeProviderServer, ChatProvider],
) -> None:
    server, provider = vendor
    server.enqueue(Status(429, retry_after=7))
    with pytest.raises(ProviderRateLimited) as caught:
        await collect(provider)
    assert caught.value.retry_after == 7


async def test_context_too_long_is_recognised(
    vendor: tuple[FakeProviderServer, ChatProvider],
) -> None:
    server, provider = vendor
    message = (
        "This model's maximum context length is 8192 tokens."
        if provider.name == "openai"
        else "prompt is too long: 250000 tokens > 200000 maximum"
    )
    server.enqueue(Status(400, message=message, code="context_length_exceeded"))
    with pytest.raises(ContextWindowExceeded):
        await collect(provider)


async def test_connection_refused_is_unavailable() -> None:
    for factory in (OpenAIProvider, AnthropicProvider):
        provider = factory.create(
            name="down", api_key="k", base_url=refused_url("/v1"), timeout=TIMEOUT
        )
        with pytest.raises(ServiceUnavailable):
            await collect(provider)


async def test_a_hang_before_the_first_byte_times_out(
    vendor: tuple[FakeProviderServer, ChatProvider],
) -> None:
    server, provider = vendor
    server.enqueue(Hang(3))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await collect(provider)
    assert time.monotonic() - started < 2.5  # the 1 s read timeout, not the 3 s hang


async def test_a_stream_cut_after_some_tokens_fails_after_them(
    vendor: tuple[FakeProviderServer, ChatProvider],
) -> None:
    server, provider = vendor
    server.enqueue(Reply("one two three four five six", cut_after=2))
    received: list[str] = []
    with pytest.raises((ServiceUnavailable, ProviderError)):
        async for chunk in provider.stream(MESSAGES, PARAMS, model="m"):
            assert isinstance(chunk, TextDelta)
            received.append(chunk.text)
    assert received == ["one ", "two "]


async def test_http_client_is_injectable() -> None:
    """Transports can be swapped: here a MockTransport answers instead of a server."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        frames = FakeOpenAI().sse(Reply("mocked"), body)
        return httpx2.Response(
            200,
            content="".join(frames).encode(),
            headers={"content-type": "text/event-stream"},
        )

    settings = ProvidersSettings(openai_api_key="sk-x")  # type: ignore[arg-type]
    providers = build_providers(
        settings,
        http_client=lambda name: httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
    )
    text, finish = await collect(providers["openai"])
    assert text == "mocked" and finish.finish_reason == "stop"
