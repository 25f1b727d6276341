"""The pure shape conversions of tools, tool calls and images: OpenAI's wire request into
ChatApp's messages and back, ChatApp's into Anthropic's, the pieces of a streamed call
into whole calls, the fields refused rather than ignored, the image limits, which models
a request with tools or images may reach, and the cache keys that tell them apart."""

from __future__ import annotations

import base64
import json
import pickle
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatapp.cache.responses import cache_key
from chatapp.chat.context import fit_messages
from chatapp.config import Settings
from chatapp.errors import InvalidRequest, PayloadTooLarge, Unsupported
from chatapp.llm.anthropic_wire import to_anthropic, tools_kwargs
from chatapp.llm.base import (
    ChatMessage,
    Finish,
    ImagePart,
    SamplingParams,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    assemble_tool_calls,
)
from chatapp.llm.catalog import Catalog
from chatapp.llm.coalesce import coalesce
from chatapp.llm.content import check_images
from chatapp.llm.openai_wire import to_openai
from chatapp.llm.openai_wire import tools_kwargs as openai_tools_kwargs
from chatapp.openai_api.convert import refuse_unserved, to_messages, tool_config
from chatapp.openai_api.protocol import ChatCompletionRequest

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake image bytes").decode()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# A whole tool round trip as an OpenAI client sends it: question with an image, the
# model's call, the tool's result, a follow-up.
ROUND_TRIP: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Weather where this photo was taken?"},
            {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    {"role": "user", "content": "And in Fahrenheit?"},
]


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "gpt", "messages": ROUND_TRIP} | fields)


def test_openai_messages_survive_the_round_trip_through_chatapp() -> None:
    messages = to_messages(request())
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "user"]
    assert messages[1].images == (ImagePart(PNG, "low"),)
    assert messages[1].content == "Weather where this photo was taken?"
    assert messages[2].tool_calls == (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)
    assert messages[3].tool_call_id == "call_1" and messages[3].uses_tools
    assert to_openai(messages) == ROUND_TRIP  # what the OpenAI provider sends on


def test_messages_in_anthropic_shapes() -> None:
    system, turns = to_anthropic(to_messages(request()))
    assert system == "Be brief."
    assert turns == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather where this photo was taken?"},
                {
                    "type": "image",
                    "source": {
                        "type": "base64",
                        "media_type": "image/png",
                        "data": PNG.split(",", 1)[1],
                    },
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {  # the tool's result and the next question: one user turn, the result first
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18 C, sunny"},
                {"type": "text", "text": "And in Fahrenheit?"},
            ],
        },
    ]
    _, turns = to_anthropic([ChatMessage("user", "x", parts=(ImagePart("https://e.x/a.jpg"),))])
    assert turns[0]["content"] == [
        {"type": "image", "source": {"type": "url", "url": "https://e.x/a.jpg"}}
    ]


def test_call_arguments_that_are_not_an_object_are_refused_for_anthropic() -> None:
    bad = [
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "", tool_calls=(ToolCall("c", "f", "[1, 2]"),)),
        ChatMessage("tool", "ok", tool_call_id="c"),
    ]
    with pytest.raises(InvalidRequest, match="not an object"):
        to_anthropic(bad)


@pytest.mark.parametrize(
    ("choice", "parallel", "openai_choice", "anthropic_choice"),
    [
        (None, None, "auto", {"type": "auto"}),
        ("required", False, "required", {"type": "any", "disable_parallel_tool_use": True}),
        ("none", None, "none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tools_and_tool_choice_in_both_shapes(
    choice: Any, parallel: bool | None, openai_choice: Any, anthropic_choice: Any
) -> None:
    fields: dict[str, Any] = {"tools": [WEATHER]}
    if choice is not None:
        fields["tool_choice"] = choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    config = tool_config(request(**fields))
    assert config is not None
    sent = openai_tools_kwargs(config)
    assert sent["tools"] == [WEATHER] and sent["tool_choice"] == openai_choice
    assert sent.get("parallel_tool_calls", True) is (parallel is not False)
    anthropic = tools_kwargs(config)
    assert anthropic["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city.",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    assert anthropic["tool_choice"] == anthropic_choice


def test_bad_tool_requests_say_what_is_wrong() -> None:
    with pytest.raises(Unsupported, match="'web_search'"):
        tool_config(request(tools=[{"type": "web_search"}]))
    with pytest.raises(InvalidRequest, match="not one of the tools"):
        tool_config(
            request(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "x"}})
        )
    with pytest.raises(InvalidRequest, match="tools is empty"):
        tool_config(request(tool_choice="required"))
    lost = [{"role": "user", "content": "hi"}, {"role": "tool", "content": "18 C"}]
    with pytest.raises(InvalidRequest, match="tool_call_id"):
        to_messages(request(messages=lost))
    audio = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]
    with pytest.raises(Unsupported, match="'input_audio'"):
        to_messages(request(messages=audio))


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("functions", [WEATHER["function"]], "tools"),
        ("function_call", "auto", "tools"),
        ("logprobs", True, "logprobs"),
        ("response_format", {"type": "json_schema", "json_schema": {}}, "json_schema"),
        ("response_format", {"type": "json_object"}, "json_object"),
        ("logit_bias", {"50256": -100}, "logit_bias"),
        ("modalities", ["text", "audio"], "audio"),
    ],
)
def test_fields_whose_ignoring_would_change_the_answer_are_refused(
    field: str, value: Any, says: str
) -> None:
    with pytest.raises(Unsupported, match=says):
        refuse_unserved(request(**{field: value}))


def test_fields_that_change_nothing_are_still_accepted() -> None:
    refuse_unserved(
        request(
            user="u1",
            metadata={"a": "b"},
            logprobs=False,
            response_format={"type": "text"},
            logit_bias={},
            modalities=["text"],
        )
    )


async def _pieces() -> AsyncIterator[TextDelta | ToolCallDelta | Finish]:
    yield TextDelta("Let me check.")
    yield ToolCallDelta(0, id="call_a", name="get_weather")
    for piece in ('{"ci', 'ty": "Pa', 'ris"}'):
        yield ToolCallDelta(0, arguments=piece)
    yield ToolCallDelta(1, id="call_b", name="get_time")
    yield ToolCallDelta(1, arguments="{}")
    yield Finish("tool_calls", 5, 9)


async def test_streamed_call_pieces_are_merged_per_call_and_assemble_whole() -> None:
    out = [c async for c in coalesce(_pieces(), window_s=10.0, max_chars=10_000)]
    calls = [c for c in out if isinstance(c, ToolCallDelta)]
    # the text at once (the first delta), then one merged piece per call
    assert out[0] == TextDelta("Let me check.")
    assert calls == [
        ToolCallDelta(0, '{"city": "Paris"}', id="call_a", name="get_weather"),
        ToolCallDelta(1, "{}", id="call_b", name="get_time"),
    ]
    assert assemble_tool_calls(calls) == (
        ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_b", "get_time", "{}"),
    )
    assert json.loads(assemble_tool_calls(calls)[0].arguments) == {"city": "Paris"}


def test_image_limits() -> None:
    big = "data:image/png;base64," + base64.b64encode(b"x" * 3000).decode()
    with pytest.raises(PayloadTooLarge, match=r"3000 bytes .* 2048 bytes"):
        check_images(
            [ChatMessage("user", "", parts=(ImagePart(big),))], max_images=4, max_bytes=2048
        )
    many = [ChatMessage("user", "", parts=(ImagePart(PNG),) * 3)]
    with pytest.raises(PayloadTooLarge, match="at most 2"):
        check_images(many, max_images=2, max_bytes=2048)
    assert check_images(many, max_images=3, max_bytes=2048) == 3
    for url, error, says in [
        ("http://example.com/a.png", Unsupported, "https"),
        ("file:///etc/passwd", Unsupported, "https"),
        ("data:image/tiff;base64,AAAA", Unsupported, "image/tiff"),
        ("data:image/png;base64,%%%", InvalidRequest, "base64"),
    ]:
        with pytest.raises(error, match=says):
            check_images(
                [ChatMessage("user", "", parts=(ImagePart(url),))], max_images=4, max_bytes=2048
            )


def _catalog(**openai: Any) -> Catalog:
    settings = Settings.from_overrides(
        {
            "providers": {
                "openai_api_key": "sk-test",
                "models": [
                    {
                        "name": "gpt",
                        "provider": "openai",
                        "provider_model": "gpt-x",
                        "context_window": 8000,
                        **openai,
                    },
                ],
                "primary": "gpt",
            },
            "llm": {"model_name": "local"},
        }
    )
    return Catalog.from_settings(settings.providers, settings.llm, available=["openai"])


def test_requests_with_tools_or_images_reach_only_models_that_take_them() -> None:
    catalog = _catalog()
    assert [e.name for e in catalog.chain(None)] == ["gpt", "local"]
    assert [e.name for e in catalog.capable_chain(None, tools=True)] == ["gpt"]
    assert [e.name for e in catalog.capable_chain("gpt", images=True)] == ["gpt"]
    with pytest.raises(Unsupported, match="'local' cannot call tools; ask one that can: gpt"):
        catalog.capable_chain("local", tools=True)
    with pytest.raises(Unsupported, match="'local' cannot read images"):
        catalog.capable_chain("local", images=True)
    text_only = _catalog(supports_images=False)
    with pytest.raises(Unsupported, match="no model configured for 'auto' can read images"):
        text_only.capable_chain(None, images=True)
    assert [e.name for e in text_only.capable_chain(None, tools=True)] == ["gpt"]


def test_cache_keys_tell_images_and_tool_calls_apart() -> None:
    params = SamplingParams(temperature=0)
    plain = [ChatMessage("user", "What is this?")]
    key = cache_key(model="gpt", messages=plain, params=params, user=None)
    one = [ChatMessage("user", "What is this?", parts=(ImagePart(PNG),))]
    other = [ChatMessage("user", "What is this?", parts=(ImagePart("https://e.x/b.png"),))]
    keys = {
        cache_key(model="gpt", messages=m, params=params, user=None) for m in (plain, one, other)
    }
    assert len(keys) == 3 and key in keys
    called = [*plain, ChatMessage("assistant", "", tool_calls=(ToolCall("c", "f", "{}"),))]
    assert cache_key(model="gpt", messages=called, params=params, user=None) != key


def test_messages_pickled_by_an_older_version_still_load() -> None:
    """A detached shard actor running the previous code sends messages of two fields."""
    message = ChatMessage.__new__(ChatMessage)
    message.__setstate__(["user", "hi"])
    assert message == ChatMessage("user", "hi") and not message.uses_tools
    again = pickle.loads(pickle.dumps(ChatMessage("tool", "18 C", tool_call_id="c1")))
    assert again == ChatMessage("tool", "18 C", tool_call_id="c1")


def test_a_trimmed_history_never_starts_with_a_tool_result_cut_from_its_call() -> None:
    called = ChatMessage("assistant", "", tool_calls=(ToolCall("c1", "f", "{}"),))
    history = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "old question " * 50),
        called,
        ChatMessage("tool", "result " * 20, tool_call_id="c1"),
        ChatMessage("user", "new question"),
    ]
    fitted = fit_messages(
        history,
        count_tokens=lambda ms: sum(len(m.content) // 4 + 4 for m in ms),
        context_window=120,
        reserve_tokens=40,
    )
    assert [m.role for m in fitted] == ["system", "user"]
    assert fitted[-1].content == "new question"
