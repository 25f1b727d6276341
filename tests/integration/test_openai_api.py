"""The official openai SDK works unchanged against ChatApp's /v1."""

from __future__ import annotations

import time

import openai
import pytest


@pytest.fixture
def sdk(chat_app: str, auth_headers: dict[str, str]) -> openai.OpenAI:
    token = auth_headers["Authorization"].removeprefix("Bearer ")
    return openai.OpenAI(base_url=f"{chat_app}/v1", api_key=token, max_retries=0)


def test_models_are_listed(sdk: openai.OpenAI) -> None:
    ids = [m.id for m in sdk.models.list()]
    assert "smollm2-135m-instruct" in ids


def test_chat_completion(sdk: openai.OpenAI) -> None:
    result = sdk.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "What colour is the sky?"},
        ],
        max_tokens=16,
        temperature=0,
    )
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].message.content
    assert result.choices[0].finish_reason in {"stop", "length"}
    assert result.usage is not None
    assert result.usage.prompt_tokens > 10 and 0 < result.usage.completion_tokens <= 16
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


def test_streamed_chat_completion_with_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Count from one to ten."}],
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 20


def test_greedy_decoding_is_repeatable(sdk: openai.OpenAI) -> None:
    ask = dict(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Name a fruit."}],
        max_tokens=12,
        temperature=0,
    )
    first = sdk.chat.completions.create(**ask)  # type: ignore[call-overload]
    again = sdk.chat.completions.create(**ask)  # type: ignore[call-overload]
    assert first.choices[0].message.content == again.choices[0].message.content


def test_sdk_errors(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="not found"):
        sdk.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.UnprocessableEntityError):
        sdk.chat.completions.create(model="auto", messages=[])
    with pytest.raises(openai.BadRequestError, match="window"):
        sdk.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "word " * 3000}]
        )


def test_answers_say_how_long_chatapp_itself_took(sdk: openai.OpenAI) -> None:
    """X-ChatApp-Overhead-Ms: the request's time in ChatApp less its wait on the model,
    so below what the client waited, on whole and on streamed answers."""
    ask = dict(
        model="auto",
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8,
        extra_headers={"X-ChatApp-Cache": "no"},  # the model answers, not the cache
    )
    started = time.perf_counter()
    whole = sdk.chat.completions.with_raw_response.create(**ask)  # type: ignore[call-overload]
    waited_ms = (time.perf_counter() - started) * 1000
    overhead = float(whole.headers["x-chatapp-overhead-ms"])
    assert 0 <= overhead < waited_ms
    assert whole.parse().choices[0].message.content

    started = time.perf_counter()
    with sdk.chat.completions.with_streaming_response.create(  # type: ignore[call-overload]
        stream=True, **ask
    ) as streamed:
        first_byte_ms = (time.perf_counter() - started) * 1000  # the headers: first token in
        overhead = float(streamed.headers["x-chatapp-overhead-ms"])
        assert 0 <= overhead < first_byte_ms
        assert any(chunk.choices and chunk.choices[0].delta.content for chunk in streamed.parse())
