"""Tool calls and images through the OpenAI and Anthropic provider clients (official SDKs)
against the fake servers, which check the request shapes as the real APIs do: the tools
and calls go out in each vendor's shape, and the calls come back, streamed and whole, as
the same `ToolCall`s with finish reason `tool_calls`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace

import httpx2
import pytest

from chatapp.errors import InvalidRequest
from chatapp.llm.anthropic import AnthropicProvider
from chatapp.llm.base import (
    ChatMessage,
    ChatProvider,
    Completion,
    ImagePart,
    SamplingParams,
    TextPart,
    ToolCall,
    ToolConfig,
    ToolSpec,
    collect,
)
from chatapp.llm.openai import OpenAIProvider
from tests.fakes.provider_tools import Call
from tests.fakes.providers import FakeAnthropic, FakeOpenAI, FakeProviderServer, Reply

TIMEOUT = httpx2.Timeout(2.0, connect=1.0)
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = ToolConfig(tools=(ToolSpec("get_weather", "The weather in a city.", SCHEMA),))
PARAMS = SamplingParams(max_tokens=32, temperature=0.0, tools=TOOLS)
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG tiny").decode()
QUESTION = ChatMessage(
    "user",
    "Weather in Paris?",
    parts=(TextPart("Weather in Paris?"), ImagePart(PNG)),
)
CALLED = ChatMessage(
    "assistant", "", tool_calls=(ToolCall("call_7", "get_weather", '{"city": "Paris"}'),)
)
RESULT = ChatMessage("tool", "18 C, sunny", tool_call_id="call_7")


@pytest.fixture(scope="module", params=["openai", "anthropic"])
def vendor(request: pytest.FixtureRequest) -> Iterator[tuple[FakeProviderServer, ChatProvider]]:
    provider: ChatProvider
    if request.param == "openai":
        server: FakeProviderServer = FakeOpenAI().start()
        provider = OpenAIProvider.create(
            name="openai", api_key="sk-test", base_url=server.base_url, timeout=TIMEOUT
        )
    else:
        server = FakeAnthropic().start()
        provider = AnthropicProvider.create(
            name="anthropic", api_key="sk-test", base_url=server.base_url, timeout=TIMEOUT
        )
    yield server, provider
    server.stop()


async def ask(
    provider: ChatProvider, messages: list[ChatMessage], params: SamplingParams
) -> Completion:
    return await collect(provider.stream(messages, params, model="m"))


@pytest.mark.parametrize("whole", [False, True], ids=["streamed", "whole"])
async def test_a_tool_call_comes_back_as_the_model_made_it(
    vendor: tuple[FakeProviderServer, ChatProvider], whole: bool
) -> None:
    server, provider = vendor
    server.reset()
    server.enqueue(Reply("Checking.", tool_calls=(Call("get_weather", {"city": "Paris"}),)))
    answer = await ask(provider, [QUESTION], replace(PARAMS, whole=whole))
    assert answer.finish.finish_reason == "tool_calls"
    assert answer.text == "Checking."
    [call] = answer.tool_calls
    assert call.name == "get_weather" and call.id
    assert json.loads(call.arguments) == {"city": "Paris"}
    body = server.requests[-1].body
    if isinstance(server, FakeOpenAI):
        assert body["tools"][0]["function"]["parameters"] == SCHEMA
        assert body["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": PNG}}
    else:
        assert body["tools"][0]["input_schema"] == SCHEMA
        assert body["messages"][0]["content"][1]["source"]["media_type"] == "image/png"


async def test_the_tool_result_reaches_the_provider_in_its_own_shape(
    vendor: tuple[FakeProviderServer, ChatProvider],
) -> None:
    server, provider = vendor
    server.reset()
    server.enqueue(Reply("It is 18 C and sunny in Paris."))
    answer = await ask(provider, [QUESTION, CALLED, RESULT], PARAMS)
    assert answer.text == "It is 18 C and sunny in Paris."
    assert answer.finish.finish_reason == "stop" and not answer.tool_calls
    messages = server.requests[-1].body["messages"]
    if isinstance(server, FakeOpenAI):
        assert messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
        assert messages[2] == {"role": "tool", "tool_call_id": "call_7", "content": "18 C, sunny"}
    else:
        assert messages[1]["content"][0]["type"] == "tool_use"
        assert messages[1]["content"][0]["input"] == {"city": "Paris"}
        assert messages[2] == {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_7", "content": "18 C, sunny"}],
        }


async def test_a_result_without_its_call_is_refused_by_the_provider(
    vendor: tuple[FakeProviderServer, ChatProvider],
) -> None:
    """The fakes check shapes as the real APIs do: a dangling tool result is a 400,
    which the client reports as a bad request, not as a provider fault."""
    server, provider = vendor
    server.reset()
    with pytest.raises(InvalidRequest, match="rejected the request"):
        await ask(provider, [ChatMessage("user", "hi"), RESULT], PARAMS)
