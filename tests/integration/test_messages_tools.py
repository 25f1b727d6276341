"""Tools and images through the official anthropic SDK on /v1/messages: Anthropic's
tool_use / tool_result / image blocks map onto ChatApp's tool calls and images (the same
core as /v1/chat/completions), answered by the fake Anthropic server behind ChatApp
(`tests.integration.tool_app`'s application)."""

from __future__ import annotations

import anthropic
import pytest

from tests.fakes.provider_tools import Call
from tests.fakes.providers import FakeAnthropic, FakeOpenAI, Reply
from tests.integration import tool_app
from tests.integration.tool_app import SELF_HOSTED

fakes, tools_url, token, providers = (  # fixtures
    tool_app.fakes,
    tool_app.tools_url,
    tool_app.token,
    tool_app.providers,
)


@pytest.fixture
def claude(providers: tuple[FakeOpenAI, FakeAnthropic]) -> FakeAnthropic:
    return providers[1]


@pytest.fixture
def client(tools_url: str, token: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=tools_url, auth_token=token, max_retries=0, timeout=60)


WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city now",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def test_a_tool_round_trip_through_the_sdk(
    client: anthropic.Anthropic, claude: FakeAnthropic
) -> None:
    question = {"role": "user", "content": "Weather in Paris?"}
    claude.enqueue(Reply("Let me check.", tool_calls=(Call("get_weather", {"city": "Paris"}),)))
    asked = client.messages.create(
        model="claude-fake",
        max_tokens=64,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "auto"},
        messages=[question],  # type: ignore[list-item]
    )
    assert asked.stop_reason == "tool_use"
    text, call = asked.content
    assert text.type == "text" and text.text == "Let me check."
    assert call.type == "tool_use" and call.name == "get_weather"
    assert call.input == {"city": "Paris"}
    upstream = claude.requests[-1].body
    assert upstream["tools"] == [WEATHER] and upstream["tool_choice"] == {"type": "auto"}

    claude.enqueue(Reply("It is 18 C and sunny in Paris."))
    answered = client.messages.create(
        model="claude-fake",
        max_tokens=64,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            question,  # type: ignore[list-item]
            {"role": "assistant", "content": asked.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "18 C, sunny"}
                ],
            },
        ],
    )
    assert answered.content[0].text == "It is 18 C and sunny in Paris."  # type: ignore[union-attr]
    assert answered.stop_reason == "end_turn"
    turns = claude.requests[-1].body["messages"]
    assert turns[1]["content"][1] == {
        "type": "tool_use",
        "id": call.id,
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": call.id, "content": "18 C, sunny"}
    ]


async def test_streamed_tool_calls_reach_the_async_sdk_whole(
    tools_url: str, token: str, claude: FakeAnthropic
) -> None:
    claude.enqueue(
        Reply(
            "",
            tool_calls=(
                Call("get_weather", {"city": "Paris"}),
                Call("get_weather", {"city": "Rome"}),
            ),
        )
    )
    sdk = anthropic.AsyncAnthropic(base_url=tools_url, auth_token=token, max_retries=0)
    async with sdk.messages.stream(
        model="claude-fake",
        max_tokens=64,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Paris and Rome?"}],
    ) as stream:
        final = await stream.get_final_message()
    await sdk.close()
    assert final.stop_reason == "tool_use"
    calls = [(b.name, b.input) for b in final.content if b.type == "tool_use"]
    assert calls == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    assert len({b.id for b in final.content if b.type == "tool_use"}) == 2


PNG = (  # a 1x1 transparent PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def test_images_go_to_a_model_that_reads_them_and_are_refused_by_one_that_cannot(
    client: anthropic.Anthropic, claude: FakeAnthropic
) -> None:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]
    claude.enqueue(Reply("A transparent pixel."))
    seen = client.messages.create(
        model="claude-fake",
        max_tokens=32,
        messages=[{"role": "user", "content": content}],  # type: ignore[typeddict-item]
    )
    assert seen.content[0].text == "A transparent pixel."  # type: ignore[union-attr]
    assert claude.requests[-1].body["messages"][0]["content"] == content

    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model=SELF_HOSTED,
            max_tokens=32,
            messages=[{"role": "user", "content": content}],  # type: ignore[typeddict-item]
        )
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
