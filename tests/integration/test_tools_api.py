"""Tools and images on /v1/chat/completions, through Ray Serve, with the official openai SDK
as the client and the fake OpenAI and Anthropic servers (which check shapes as the real
APIs do) as the providers: a whole tool round trip per provider, streamed and not;
models that cannot take tools or images refused, never silently used; image limits; the
fields refused rather than ignored; the response cache kept out of it."""

from __future__ import annotations

import base64
import json
from typing import Any

import openai
import pytest

from tests.fakes.provider_tools import Call
from tests.fakes.providers import FakeAnthropic, FakeOpenAI, Reply, Status
from tests.integration import tool_app
from tests.integration.tool_app import MAX_IMAGE_BYTES, SELF_HOSTED

fakes, tools_url, token = tool_app.fakes, tool_app.tools_url, tool_app.token  # fixtures
sdk, providers = tool_app.sdk, tool_app.providers

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
QUESTION = {"role": "user", "content": "What is the weather in Paris?"}
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG small image").decode()
Providers = tuple[FakeOpenAI, FakeAnthropic]


def _call_back(client: openai.OpenAI, model: str, stream: bool) -> tuple[str, str, str, str]:
    """Ask with tools; the id, name, arguments and finish reason of the one call."""
    if not stream:
        result = client.chat.completions.create(model=model, messages=[QUESTION], tools=[WEATHER])  # type: ignore[list-item]
        choice = result.choices[0]
        [call] = choice.message.tool_calls or []
        assert call.type == "function"
        return call.id, call.function.name, call.function.arguments, choice.finish_reason
    ids, names, arguments, reasons = set(), set(), "", []
    for chunk in client.chat.completions.create(
        model=model,
        messages=[QUESTION],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        stream=True,
    ):
        if not chunk.choices:
            continue
        for piece in chunk.choices[0].delta.tool_calls or ():
            assert piece.index == 0
            ids |= {piece.id} if piece.id else set()
            if piece.function:
                names |= {piece.function.name} if piece.function.name else set()
                arguments += piece.function.arguments or ""
        if chunk.choices[0].finish_reason:
            reasons.append(chunk.choices[0].finish_reason)
    assert len(ids) == 1 and len(names) == 1 and len(reasons) == 1
    return ids.pop(), names.pop(), arguments, reasons[0]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("model", ["gpt-fake", "claude-fake"])
def test_a_tool_call_round_trip(
    sdk: openai.OpenAI, providers: Providers, model: str, stream: bool
) -> None:
    oa, an = providers
    server = oa if model == "gpt-fake" else an
    server.enqueue(
        Reply("", tool_calls=(Call("get_weather", {"city": "Paris"}),)),
        Reply("It is 18 C and sunny in Paris."),
    )
    call_id, name, arguments, reason = _call_back(sdk, model, stream)
    assert (name, json.loads(arguments), reason) == ("get_weather", {"city": "Paris"}, "tool_calls")

    sent = server.requests[-1].body
    if server is oa:
        assert sent["tools"] == [WEATHER]
    else:  # Anthropic's shape: no function wrapper, the schema as input_schema
        assert sent["tools"] == [
            {
                "name": "get_weather",
                "description": "The current weather in a city.",
                "input_schema": WEATHER["function"]["parameters"],  # type: ignore[index]
            }
        ]
        assert sent["tool_choice"] == {"type": "auto"}

    messages: list[Any] = [
        QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "18 C, sunny"},
    ]
    final = sdk.chat.completions.create(model=model, messages=messages, tools=[WEATHER])  # type: ignore[list-item]
    assert final.choices[0].message.content == "It is 18 C and sunny in Paris."
    assert final.choices[0].finish_reason == "stop" and not final.choices[0].message.tool_calls

    received = server.requests[-1].body["messages"]
    if server is oa:
        assert received[1]["tool_calls"][0]["id"] == call_id
        assert received[2] == {"role": "tool", "tool_call_id": call_id, "content": "18 C, sunny"}
    else:
        assert received[1] == {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": call_id, "name": name, "input": {"city": "Paris"}}
            ],
        }
        assert received[2] == {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call_id, "content": "18 C, sunny"}],
        }


def test_tools_for_the_self_hosted_model_are_refused(
    sdk: openai.OpenAI, providers: Providers
) -> None:
    with pytest.raises(openai.BadRequestError, match=f"'{SELF_HOSTED}' cannot call tools") as err:
        sdk.chat.completions.create(model=SELF_HOSTED, messages=[QUESTION], tools=[WEATHER])  # type: ignore[list-item]
    assert "gpt-fake" in str(err.value)  # it says which models can
    assert not providers[0].requests and not providers[1].requests


def test_with_tools_the_fallback_skips_models_that_cannot_call_them(
    sdk: openai.OpenAI, providers: Providers
) -> None:
    oa, an = providers
    oa.enqueue(Status(503))
    an.enqueue(Reply("", tool_calls=(Call("get_weather", {"city": "Paris"}),)))
    result = sdk.chat.completions.create(model="auto", messages=[QUESTION], tools=[WEATHER])  # type: ignore[list-item]
    assert result.choices[0].finish_reason == "tool_calls"
    assert result.model == "claude-fake"
    assert (result.usage.model_extra or {})["fallback_from"] == "gpt-fake"  # type: ignore[union-attr]

    # Both providers down: an error, not the text-only self-hosted model's answer.
    oa.enqueue(Status(503))
    an.enqueue(Status(503))
    with pytest.raises(openai.InternalServerError) as err:
        sdk.chat.completions.create(model="auto", messages=[QUESTION], tools=[WEATHER])  # type: ignore[list-item]
    assert err.value.status_code == 503


def _image_question(*urls: str) -> list[Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What is in this picture?"}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return [{"role": "user", "content": parts}]


def test_images_reach_each_provider_in_its_shape(sdk: openai.OpenAI, providers: Providers) -> None:
    oa, an = providers
    oa.enqueue(Reply("A tiny PNG."))
    an.enqueue(Reply("A tiny PNG."))
    url = "https://example.com/cat.jpg"
    for model in ("gpt-fake", "claude-fake"):
        answer = sdk.chat.completions.create(model=model, messages=_image_question(PNG, url))
        assert answer.choices[0].message.content == "A tiny PNG."
    assert oa.requests[-1].body["messages"][0]["content"] == _image_question(PNG, url)[0]["content"]
    blocks = an.requests[-1].body["messages"][0]["content"]
    assert blocks == [
        {"type": "text", "text": "What is in this picture?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PNG.split(",")[1]},
        },
        {"type": "image", "source": {"type": "url", "url": url}},
    ]


def test_images_for_models_that_cannot_read_them_are_refused(
    sdk: openai.OpenAI, providers: Providers
) -> None:
    for model in ("gpt-text", SELF_HOSTED):
        with pytest.raises(openai.BadRequestError, match=f"'{model}' cannot read images"):
            sdk.chat.completions.create(model=model, messages=_image_question(PNG))
    with pytest.raises(openai.BadRequestError, match="only https"):
        sdk.chat.completions.create(
            model="gpt-fake", messages=_image_question("http://169.254.169.254/latest")
        )
    assert not providers[0].requests and not providers[1].requests


def test_image_limits_are_413_with_the_limit(sdk: openai.OpenAI, providers: Providers) -> None:
    big = "data:image/png;base64," + base64.b64encode(b"x" * (MAX_IMAGE_BYTES + 1)).decode()
    with pytest.raises(openai.APIStatusError, match=f"over the limit of {MAX_IMAGE_BYTES}") as err:
        sdk.chat.completions.create(model="gpt-fake", messages=_image_question(big))
    assert err.value.status_code == 413
    with pytest.raises(openai.APIStatusError, match="at most 2") as err:
        sdk.chat.completions.create(model="gpt-fake", messages=_image_question(PNG, PNG, PNG))
    assert err.value.status_code == 413
    assert not providers[0].requests


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"functions": [WEATHER["function"]]}, "use tools|as tools"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "json_schema"),
        ({"logprobs": True}, "logprobs"),
    ],
)
def test_fields_that_would_be_ignored_are_refused(
    sdk: openai.OpenAI, providers: Providers, extra: dict[str, Any], says: str
) -> None:
    with pytest.raises(openai.BadRequestError, match=says):
        sdk.chat.completions.create(model="gpt-fake", messages=[QUESTION], extra_body=extra)
    assert not providers[0].requests


def test_tool_and_image_requests_are_not_answered_from_the_cache(
    sdk: openai.OpenAI, providers: Providers
) -> None:
    """temperature 0 answers are cached (auto mode): not with tools, and a request with
    another image is another request."""
    oa, _ = providers
    call = Reply("", tool_calls=(Call("get_weather", {"city": "Paris"}),))
    oa.enqueue(call, call, Reply("A cat."), Reply("A dog."))
    for _ in range(2):
        result = sdk.chat.completions.create(
            model="gpt-fake",
            messages=[QUESTION],
            tools=[WEATHER],
            temperature=0,  # type: ignore[list-item]
        )
        assert result.choices[0].finish_reason == "tool_calls"
    assert len(oa.requests) == 2
    other = "data:image/png;base64," + base64.b64encode(b"\x89PNG another").decode()
    answers = [
        sdk.chat.completions.create(model="gpt-fake", messages=_image_question(url), temperature=0)
        .choices[0]
        .message.content
        for url in (PNG, other)
    ]
    assert answers == ["A cat.", "A dog."] and len(oa.requests) == 4
