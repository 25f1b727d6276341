"""The pure conversion between Anthropic's Messages API and ChatApp's chat types."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from chatapp.anthropic_api import protocol
from chatapp.anthropic_api.convert import (
    stop_reason,
    to_chat_messages,
    to_message,
    tool_config,
    usage,
)
from chatapp.anthropic_api.errors import error_envelope, error_type
from chatapp.anthropic_api.stream import AnswerEvents
from chatapp.errors import InvalidRequest, ProviderError
from chatapp.llm.base import (
    ChatMessage,
    Finish,
    ImagePart,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolConfig,
    ToolSpec,
)


def request(**fields: Any) -> protocol.MessagesRequest:
    body = {"model": "auto", "max_tokens": 32, "messages": [{"role": "user", "content": "Hi"}]}
    return protocol.MessagesRequest.model_validate({**body, **fields})


def test_system_and_turns_become_chat_messages_in_order() -> None:
    messages = to_chat_messages(
        request(
            system="Answer briefly.",
            messages=[
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Paris."}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "And of Italy?"},
                        {"type": "text", "text": "One word.", "cache_control": {"type": "x"}},
                    ],
                },
            ],
        )
    )
    assert messages == [
        ChatMessage("system", "Answer briefly."),
        ChatMessage("user", "Capital of France?"),
        ChatMessage("assistant", "Paris."),
        ChatMessage("user", "And of Italy?\n\nOne word."),
    ]


def test_a_system_prompt_of_text_blocks_is_one_system_message_and_an_empty_one_none() -> None:
    blocks = [{"type": "text", "text": "Be kind."}, {"type": "text", "text": "Be brief."}]
    assert to_chat_messages(request(system=blocks))[0] == ChatMessage(
        "system", "Be kind.\n\nBe brief."
    )
    assert [m.role for m in to_chat_messages(request(system=""))] == ["user"]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Summarise this."},
                            {"type": "document", "source": {"type": "text", "data": "x"}},
                        ],
                    }
                ]
            },
            "messages.0.content.1: document blocks are not supported in user messages",
        ),
        (
            {"system": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
            "system.0: image blocks are not supported here",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "base64", "data": "AA"}}],
                    }
                ]
            },
            "messages.0.content.0.source: an image needs a base64 source",
        ),
        (
            {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "tools.0: web_search_20250305 is not supported",
        ),
        ({"tool_choice": {"type": "any"}}, "tool_choice: there are no tools"),
        (
            {
                "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "tool", "name": "get_time"},
            },
            "tool_choice.name: no tool is named 'get_time'",
        ),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking: not supported"),
        ({"output_config": {"format": {"type": "json_schema"}}}, "output_config: not supported"),
        (
            {
                "messages": [
                    {"role": "user", "content": "Write a poem"},
                    {"role": "assistant", "content": "Roses are"},
                ]
            },
            "the last message must be the user's",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages.0.content.0.text: a text block needs its text",
        ),
    ],
)
def test_what_chatapp_would_answer_differently_is_refused_with_where_and_why(
    fields: dict[str, Any], says: str
) -> None:
    asked = request(**fields)
    with pytest.raises(InvalidRequest, match=says):
        to_chat_messages(asked)
        tool_config(asked)


def test_unknown_fields_and_features_turned_off_are_accepted() -> None:
    messages = to_chat_messages(
        request(
            tools=[],
            thinking={"type": "disabled"},
            tool_choice={"type": "none"},
            output_config={"effort": "low"},
            top_k=5,
            service_tier="auto",
            metadata={"user_id": "u-1"},
        )
    )
    assert messages == [ChatMessage("user", "Hi")]


@pytest.mark.parametrize(
    "fields",
    [
        {"max_tokens": None},
        {"max_tokens": 0},
        {"temperature": 1.5},
        {"top_p": -0.1},
        {"messages": []},
        {"messages": [{"role": "system", "content": "x"}]},
        {"stop_sequences": [""]},
        {"model": ""},
    ],
)
def test_malformed_requests_fail_validation(fields: dict[str, Any]) -> None:
    body = {"model": "auto", "max_tokens": 32, "messages": [{"role": "user", "content": "Hi"}]}
    body.update(fields)
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(ValidationError):
        protocol.MessagesRequest.model_validate(body)


@pytest.mark.parametrize(
    ("finish_reason", "expected"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")],
)
def test_finish_reasons_become_stop_reasons(finish_reason: str, expected: str) -> None:
    assert stop_reason(Finish(finish_reason, 1, 1)) == expected


def test_a_whole_answer_is_a_message_object_with_usage_and_the_model_that_answered() -> None:
    finish = Finish(
        "stop",
        prompt_tokens=12,
        completion_tokens=3,
        model="smollm2-135m-instruct",
        provider="self-hosted",
        fallback_from="claude-fake",
    )
    message = to_message("msg_1", "Hello there.", finish, requested_model="auto").model_dump()
    assert message == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "Hello there."}],
        "model": "smollm2-135m-instruct",
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "output_tokens": 3,
            "provider": "self-hosted",
            "cost_usd": 0.0,
            "cached": False,
            "fallback_from": "claude-fake",
        },
    }
    empty = to_message("msg_2", "", Finish("length", 5, 0), requested_model="claude-fake")
    assert empty.content == [] and empty.model == "claude-fake"
    assert empty.stop_reason == "max_tokens" and usage(Finish("length", 5, 0)).input_tokens == 5


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, (401, "authentication_error")),
        (403, (403, "permission_error")),
        (404, (404, "not_found_error")),
        (422, (400, "invalid_request_error")),
        (400, (400, "invalid_request_error")),
        (413, (413, "request_too_large")),
        (429, (429, "rate_limit_error")),
        (503, (529, "overloaded_error")),
        (502, (500, "api_error")),
        (504, (500, "api_error")),
        (500, (500, "api_error")),
    ],
)
def test_chatapp_statuses_map_to_anthropic_errors(status: int, expected: tuple[int, str]) -> None:
    assert error_type(status) == expected


def test_the_error_envelope_is_anthropics() -> None:
    assert error_envelope("not_found_error", "model x not found", request_id="r1") == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model x not found"},
        "request_id": "r1",
    }


WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}}


def test_tools_and_the_tool_choice_become_a_tool_config() -> None:
    tools = [{"name": "get_weather", "description": "Weather now", "input_schema": WEATHER}]
    assert tool_config(request()) is None
    assert tool_config(request(tools=tools)) == ToolConfig(
        tools=(ToolSpec("get_weather", "Weather now", WEATHER),), choice="auto"
    )
    forced = tool_config(
        request(
            tools=tools,
            tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        )
    )
    assert forced is not None
    assert (forced.choice, forced.function, forced.parallel) == ("function", "get_weather", False)
    assert tool_config(request(tools=tools, tool_choice={"type": "any"})).choice == "required"  # type: ignore[union-attr]
    assert tool_config(request(tools=tools, tool_choice={"type": "none"})).choice == "none"  # type: ignore[union-attr]


def test_tool_use_and_tool_results_and_images_become_chat_messages() -> None:
    messages = to_chat_messages(
        request(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather in Paris? And what is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Let me check."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "content": [{"type": "text", "text": "timeout"}],
                            "is_error": True,
                        },
                        {"type": "text", "text": "Thanks"},
                    ],
                },
            ]
        )
    )
    assert messages == [
        ChatMessage(
            "user",
            "Weather in Paris? And what is this?",
            parts=(
                TextPart("Weather in Paris? And what is this?"),
                ImagePart("data:image/png;base64,iVBO"),
            ),
        ),
        ChatMessage(
            "assistant",
            "Let me check.",
            tool_calls=(ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),),
        ),
        ChatMessage("tool", "18 C", tool_call_id="toolu_1"),
        ChatMessage("tool", "Error: timeout", tool_call_id="toolu_2"),
        ChatMessage("user", "Thanks"),
    ]
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    only_image = to_chat_messages(request(messages=[{"role": "user", "content": [url]}]))
    assert only_image == [ChatMessage("user", "", parts=(ImagePart("https://example.com/a.png"),))]


def test_an_answer_with_tool_calls_is_tool_use_blocks() -> None:
    calls = (ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),)
    message = to_message(
        "msg_1",
        "Checking.",
        Finish("tool_calls", 20, 9),
        requested_model="claude-x",
        tool_calls=calls,
    )
    assert message.stop_reason == "tool_use"
    assert [block.model_dump() for block in message.content] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    with pytest.raises(ProviderError, match="not an object"):
        to_message(
            "msg_2",
            "",
            Finish("tool_calls", 1, 1),
            requested_model="x",
            tool_calls=(ToolCall("t", "f", "[1, 2]"),),
        )


def test_a_streamed_text_answer_is_anthropics_event_sequence() -> None:
    events = AnswerEvents("msg_1", "auto")
    stream = [
        *events.start(),
        *events.feed(TextDelta("Hel")),
        *events.feed(TextDelta("")),
        *events.feed(TextDelta("lo")),
        *events.feed(Finish("stop", 4, 2, provider="anthropic")),
    ]
    assert [name for name, _ in stream] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in stream)
    assert stream[0][1]["message"]["id"] == "msg_1" and stream[0][1]["message"]["content"] == []
    assert stream[1][1]["content_block"] == {"type": "text", "text": ""}
    assert [d["delta"]["text"] for n, d in stream if n == "content_block_delta"] == ["Hel", "lo"]
    done = stream[6][1]
    assert done["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert done["usage"]["output_tokens"] == 2 and done["usage"]["input_tokens"] == 4


def test_streamed_tool_calls_are_tool_use_blocks_after_the_text() -> None:
    events = AnswerEvents("msg_1", "claude-x")
    stream = [
        *events.start(),
        *events.feed(TextDelta("Checking.")),
        *events.feed(ToolCallDelta(0, '{"city": ', id="toolu_1", name="get_weather")),
        *events.feed(ToolCallDelta(0, '"Paris"}')),
        *events.feed(ToolCallDelta(1, "{}", id="toolu_2", name="get_time")),
        *events.feed(Finish("tool_calls", 30, 12)),
    ]
    blocks = [(d["index"], d["content_block"]) for n, d in stream if n == "content_block_start"]
    assert blocks == [
        (0, {"type": "text", "text": ""}),
        (1, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
        (2, {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}),
    ]
    pieces = [
        (d["index"], d["delta"]["partial_json"])
        for n, d in stream
        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    ]
    assert pieces == [(1, '{"city": '), (1, '"Paris"}'), (2, "{}")]
    stops = [d["index"] for n, d in stream if n == "content_block_stop"]
    assert stops == [0, 1, 2]
    assert [n for n, _ in stream].count("ping") == 1
    assert stream[-2][1]["delta"]["stop_reason"] == "tool_use"
