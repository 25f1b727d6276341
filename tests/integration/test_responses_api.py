"""The official openai SDK's Responses API (`client.responses`) against ChatApp's
/v1/responses: answers kept server-side as turns of the user's own conversations, with a
fake OpenAI server (the real wire format) as the model, so what the model was sent shows."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from ray import serve

from actors.client import kill_shards
from chatapp.config import Settings
from deployments.app import build_app
from tests.conftest import REDIS_URL, expect_error, register_and_login, run_app
from tests.fakes.providers import FakeOpenAI, Reply

MODEL = "gpt-fake"
DEFAULT_SYSTEM = Settings().chat.system_prompt


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture(scope="module")
def base(chat_app: str, app_overrides: dict[str, Any], fake_openai: FakeOpenAI) -> Iterator[str]:
    """A ChatApp application whose model is the fake OpenAI server (the simulated engine
    as the self-hosted one, never asked)."""
    overrides = copy.deepcopy(app_overrides)
    overrides["shards"] = {"count": 1, "name_prefix": f"responses-{uuid.uuid4().hex[:6]}"}
    overrides["redis"] = {"url": REDIS_URL, "key_prefix": f"chatapp-test-{uuid.uuid4().hex[:8]}:"}
    overrides["llm"] = {"engine": "simulated", "simulated_reply_tokens": 8}
    overrides["providers"] = {
        "openai_api_key": "sk-test",
        "openai_base_url": fake_openai.base_url,
        "models": [
            {
                "name": MODEL,
                "provider": "openai",
                "provider_model": "gpt-x",
                "context_window": 16000,
            }
        ],
        "primary": MODEL,
        "retry_attempts": 1,
        "breaker_threshold": 1000,
    }
    run_app(build_app(overrides), name="responses", route_prefix="/responses", base_url=chat_app)
    yield f"{chat_app}/responses"
    serve.delete("responses")
    kill_shards(Settings.from_overrides(overrides))


@pytest.fixture(scope="module")
def headers(base: str) -> dict[str, str]:
    return register_and_login(base)


@pytest.fixture
def sdk(base: str, headers: dict[str, str]) -> openai.OpenAI:
    token = headers["Authorization"].removeprefix("Bearer ")
    return openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0)


@pytest.fixture
def api(base: str, headers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture
def provider(fake_openai: FakeOpenAI) -> FakeOpenAI:
    fake_openai.reset()
    return fake_openai


def sent(provider: FakeOpenAI) -> list[tuple[str, str]]:
    """The messages the model was last sent, as (role, content)."""
    return [(m["role"], m["content"]) for m in provider.requests[-1].body["messages"]]


def conversation_ids(api: httpx.Client) -> list[str]:
    return [c["id"] for c in api.get("/api/conversations", params={"limit": 100}).json()["items"]]


def stored(api: httpx.Client, conversation_id: str) -> list[tuple[str, str]]:
    detail = api.get(f"/api/conversations/{conversation_id}")
    assert detail.status_code == 200, detail.text
    return [(m["role"], m["content"]) for m in detail.json()["messages"]]


def test_previous_response_id_continues_the_users_conversation(
    sdk: openai.OpenAI, api: httpx.Client, provider: FakeOpenAI
) -> None:
    provider.enqueue(Reply("Nice to meet you, Ada."), Reply("Your name is Ada."))
    first = sdk.responses.create(
        model=MODEL, input="My name is Ada.", instructions="Answer in one line."
    )
    assert first.id.startswith("resp_") and first.object == "response"
    assert first.status == "completed" and first.output_text == "Nice to meet you, Ada."
    assert first.output[0].type == "message" and first.output[0].role == "assistant"
    assert first.instructions == "Answer in one line." and first.previous_response_id is None
    assert first.usage is not None and first.usage.output_tokens == 5
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens > 5
    assert sent(provider) == [("system", "Answer in one line."), ("user", "My name is Ada.")]

    second = sdk.responses.create(
        model=MODEL, input="What is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id and second.id != first.id
    assert second.output_text == "Your name is Ada."
    # The model saw the earlier turn; instructions are not carried over (OpenAI's rule).
    assert sent(provider) == [
        ("system", DEFAULT_SYSTEM),
        ("user", "My name is Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?"),
    ]
    # One conversation of the user's, in /api like any other, holding both turns.
    conversation = first.to_dict()["conversation_id"]
    assert second.to_dict()["conversation_id"] == conversation
    assert conversation in conversation_ids(api)
    assert stored(api, conversation) == [
        ("user", "My name is Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?"),
        ("assistant", "Your name is Ada."),
    ]
    again = sdk.responses.retrieve(second.id)
    assert again.id == second.id and again.status == "completed"
    assert again.output_text == "Your name is Ada." and again.previous_response_id == first.id
    assert again.usage is not None and again.usage.output_tokens == 4

    # The conversation has moved on: continuing from the first response would branch it.
    with pytest.raises(openai.ConflictError, match="latest"):
        sdk.responses.create(model=MODEL, input="And again?", previous_response_id=first.id)
    assert len(stored(api, conversation)) == 4


def test_streamed_response_events_in_order(sdk: openai.OpenAI, provider: FakeOpenAI) -> None:
    provider.enqueue(Reply("one two three four"))
    events = list(sdk.responses.create(model=MODEL, input="Count to four.", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"} and len(kinds) - 8 >= 2
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = events[-1].response  # type: ignore[union-attr]
    assert text == "one two three four" == done.output_text
    assert events[0].response.status == "in_progress" and done.status == "completed"  # type: ignore[union-attr]
    assert done.usage is not None and done.usage.output_tokens == 4
    assert sdk.responses.retrieve(done.id).output_text == text


def test_a_stream_failing_mid_answer_ends_failed_and_keeps_the_partial_answer(
    sdk: openai.OpenAI, api: httpx.Client, provider: FakeOpenAI
) -> None:
    provider.enqueue(Reply("alpha beta gamma delta epsilon", cut_after=2))
    events = list(sdk.responses.create(model=MODEL, input="Five words, please.", stream=True))
    last = events[-1]
    assert last.type == "response.failed"
    assert last.response.status == "failed" and last.response.error is not None
    partial = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert partial == "alpha beta " == last.response.output_text
    kept = sdk.responses.retrieve(last.response.id)
    assert kept.status == "failed" and kept.output_text == partial
    conversation = last.response.to_dict()["conversation_id"]
    detail = api.get(f"/api/conversations/{conversation}").json()
    assert detail["messages"][-1]["status"] == "incomplete"


def test_input_items_become_the_conversations_first_turns(
    sdk: openai.OpenAI, api: httpx.Client, provider: FakeOpenAI
) -> None:
    provider.enqueue(Reply("Blue."))
    answer = sdk.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "Sky colour?"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Which sky?"}],
            },
            {"role": "user", "content": "Earth's, at noon."},
        ],
    )
    assert answer.output_text == "Blue."
    assert sent(provider) == [
        ("system", "Be brief."),
        ("user", "Sky colour?"),
        ("assistant", "Which sky?"),
        ("user", "Earth's, at noon."),
    ]
    conversation = answer.to_dict()["conversation_id"]
    assert stored(api, conversation) == [
        ("user", "Sky colour?"),
        ("assistant", "Which sky?"),
        ("user", "Earth's, at noon."),
        ("assistant", "Blue."),
    ]
    title = next(
        c for c in api.get("/api/conversations").json()["items"] if c["id"] == conversation
    )
    assert title["title"] == "Sky colour?"


def test_another_users_response_is_not_found(
    base: str, sdk: openai.OpenAI, provider: FakeOpenAI
) -> None:
    mine = sdk.responses.create(model=MODEL, input="Secret plans.")
    other = register_and_login(base)
    theirs = openai.OpenAI(
        base_url=f"{base}/v1",
        api_key=other["Authorization"].removeprefix("Bearer "),
        max_retries=0,
    )
    with pytest.raises(openai.NotFoundError, match="not found"):
        theirs.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError, match="not found"):
        theirs.responses.create(model=MODEL, input="Go on.", previous_response_id=mine.id)
    for unknown in (f"resp_{uuid.uuid4().hex}", "resp_nothex", "chatcmpl-123"):
        with pytest.raises(openai.NotFoundError):
            sdk.responses.retrieve(unknown)
    response = httpx.get(f"{base}/v1/responses/{mine.id}", headers=other)
    error = expect_error(response, 404)
    assert error["type"] == "invalid_request_error" and error["code"] == "not_found"
    with pytest.raises(openai.NotFoundError):
        theirs.responses.delete(mine.id)
    # The owner still reads it, and may delete it: then it is gone for the owner too.
    assert sdk.responses.retrieve(mine.id).output_text == mine.output_text
    sdk.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(mine.id)


@pytest.mark.parametrize(
    ("body", "says", "status"),
    [
        ({"input": []}, "at least one message", 422),
        ({"input": [{"role": "assistant", "content": "Hi"}]}, "last message must be", 422),
        ({"input": "   "}, "non-empty user message", 422),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input_text",
            400,
        ),
        ({"input": [{"type": "function_call_output", "output": "1"}]}, "message items", 400),
        ({"input": "hi", "tools": [{"type": "function", "name": "f"}]}, "tools", 400),
        ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens", 422),
        ({"input": "hi", "temperature": 3}, "temperature", 422),
        ({"input": "hi", "metadata": {f"k{i}": "v" for i in range(17)}}, "16 keys", 422),
        ({"input": "a\x00b"}, "NUL", 422),
    ],
)
def test_bad_input_is_refused_clearly_and_stores_nothing(
    base: str,
    api: httpx.Client,
    headers: dict[str, str],
    body: dict[str, Any],
    says: str,
    status: int,
) -> None:
    """Malformed input is 422 (as on every route), what ChatApp does not do 400."""
    before = conversation_ids(api)
    response = httpx.post(f"{base}/v1/responses", json={"model": MODEL, **body}, headers=headers)
    error = expect_error(response, status)
    assert says in error["message"], error
    assert conversation_ids(api) == before


def test_a_failure_before_the_first_token_stores_nothing(
    sdk: openai.OpenAI, api: httpx.Client
) -> None:
    before = conversation_ids(api)
    with pytest.raises(openai.NotFoundError, match="gpt-nope"):
        sdk.responses.create(
            model="gpt-nope",
            input=[
                {"role": "user", "content": "First."},
                {"role": "assistant", "content": "Noted."},
                {"role": "user", "content": "Second."},
            ],
        )
    assert conversation_ids(api) == before


def test_store_false_answers_and_keeps_nothing(
    sdk: openai.OpenAI, api: httpx.Client, provider: FakeOpenAI
) -> None:
    provider.enqueue(Reply("Remembered: 42."), Reply("It was 42."))
    kept = sdk.responses.create(model=MODEL, input="The number is 42.")
    before = conversation_ids(api)
    answer = sdk.responses.create(
        model=MODEL, input="Which number?", previous_response_id=kept.id, store=False
    )
    assert answer.output_text == "It was 42." and answer.store is False
    assert sent(provider)[-3:] == [
        ("user", "The number is 42."),
        ("assistant", "Remembered: 42."),
        ("user", "Which number?"),
    ]
    assert conversation_ids(api) == before
    assert len(stored(api, kept.to_dict()["conversation_id"])) == 2
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(answer.id)
