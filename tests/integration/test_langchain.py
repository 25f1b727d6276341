"""LangChain's `ChatOpenAI` pointed at ChatApp's /v1 works unchanged: `invoke`, `stream`
and a `bind_tools` round trip, answered by the fake OpenAI and Anthropic providers."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.fakes.provider_tools import Call
from tests.fakes.providers import FakeAnthropic, FakeOpenAI, Reply
from tests.integration import tool_app

fakes, tools_url, token = tool_app.fakes, tool_app.tools_url, tool_app.token  # fixtures
providers = tool_app.providers

Providers = tuple[FakeOpenAI, FakeAnthropic]


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"18 C and sunny in {city}"


def chat(url: str, key: str, model: str) -> ChatOpenAI:
    return ChatOpenAI(model=model, base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def test_invoke_and_stream(tools_url: str, token: str, providers: Providers) -> None:
    oa, _ = providers
    oa.enqueue(Reply("Paris is the capital of France."), Reply("One two three four."))
    llm = chat(tools_url, token, "gpt-fake")
    answer = llm.invoke("What is the capital of France?")
    assert answer.content == "Paris is the capital of France."
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0

    pieces = list(llm.stream([HumanMessage("Count to four.")]))
    assert sum(1 for p in pieces if p.content) >= 2  # streamed, not one block
    assert "".join(str(p.content) for p in pieces) == "One two three four."
    assert oa.requests[-1].body["stream"] is True


@pytest.mark.parametrize("model", ["gpt-fake", "claude-fake"])
def test_bind_tools_round_trip(
    tools_url: str, token: str, providers: Providers, model: str
) -> None:
    server = providers[0] if model == "gpt-fake" else providers[1]
    server.enqueue(
        Reply("", tool_calls=(Call("get_weather", {"city": "Paris"}),)),
        Reply("It is 18 C and sunny in Paris."),
    )
    llm = chat(tools_url, token, model).bind_tools([get_weather])
    question = HumanMessage("What is the weather in Paris?")
    called = llm.invoke([question])
    assert isinstance(called, AIMessage)
    [call] = called.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}

    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    final = llm.invoke([question, called, result])
    assert final.content == "It is 18 C and sunny in Paris."
    assert not final.tool_calls  # type: ignore[attr-defined]
