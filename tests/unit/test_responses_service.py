"""/v1/responses in the core, without Ray: `ResponsesService` over the same in-process
chat rig as `test_chat_service` (a SQLite `ConversationStore`, the real router over a
scripted model), so every turn is a real turn of a stored conversation."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chatapp.chat import repository
from chatapp.errors import Conflict, InvalidRequest, NotFound, ProviderAuth, ProviderTimeout
from chatapp.llm.base import TextDelta
from chatapp.openai_api.responses import (
    ResponseEvents,
    ResponseObject,
    ResponseRequest,
    ResponseUsage,
    finished,
)
from chatapp.responses.service import ResponseFailed, ResponsePart, ResponsesService
from tests.fakes.scripted import Answer
from tests.fakes.users import create_user
from tests.unit.test_chat_service import SETTINGS, Rig, db, rig

__all__ = ["db", "rig"]  # fixtures used here


async def user_of(rig: Rig) -> uuid.UUID:
    async with rig.sessionmaker() as session:
        return (await create_user(session)).id


def service(rig: Rig) -> ResponsesService:
    return ResponsesService(chat=rig.service, sessionmaker=rig.sessionmaker, settings=SETTINGS)


async def respond(rig: Rig, user: uuid.UUID, **body: Any) -> tuple[list[ResponsePart], Any]:
    run = await service(rig).create(user_id=user, request=ResponseRequest(**body))
    return [part async for part in run.parts], run.head


async def conversations_of(rig: Rig, user: uuid.UUID) -> list[uuid.UUID]:
    async with rig.sessionmaker() as session:
        rows, _ = await repository.list_conversations(session=session, user_id=user, limit=100)
    return [c.id for c in rows]


def prompt(rig: Rig) -> list[tuple[str, str]]:
    _, messages = rig.model.history[-1]
    return [(m.role, m.content) for m in messages]


async def test_a_response_is_a_turn_and_previous_response_id_continues_it(rig: Rig) -> None:
    user = await user_of(rig)
    rig.model.enqueue(Answer("Hello Ada."), Answer("You are Ada."))
    parts, head = await respond(rig, user, input="I am Ada.", instructions="Be kind.")
    assert head.status == "in_progress" and head.conversation_id is not None
    first = parts[-1]
    assert isinstance(first, ResponseObject) and first.status == "completed"
    assert "".join(p.text for p in parts if isinstance(p, TextDelta)) == "Hello Ada."
    assert first.output[0].content[0].text == "Hello Ada." and first.usage is not None
    assert prompt(rig) == [("system", "Be kind."), ("user", "I am Ada.")]

    parts, _ = await respond(rig, user, input="Who am I?", previous_response_id=first.id)
    second = parts[-1]
    assert isinstance(second, ResponseObject) and second.previous_response_id == first.id
    assert second.conversation_id == first.conversation_id
    assert prompt(rig) == [
        ("system", "You are terse."),  # instructions are not carried over
        ("user", "I am Ada."),
        ("assistant", "Hello Ada."),
        ("user", "Who am I?"),
    ]
    assert await conversations_of(rig, user) == [uuid.UUID(first.conversation_id)]
    assert [m[1] for m in await rig.stored(uuid.UUID(first.conversation_id))] == [
        "I am Ada.",
        "Hello Ada.",
        "Who am I?",
        "You are Ada.",
    ]
    again = await service(rig).get(user_id=user, response_id_text=second.id)
    assert again.model_dump() == {
        **second.model_dump(),
        "created_at": again.created_at,
        "model": again.model,
        "max_output_tokens": None,
        "temperature": None,
        "top_p": None,
    }
    with pytest.raises(Conflict, match="latest"):
        await respond(rig, user, input="Again?", previous_response_id=first.id)
    stranger = await user_of(rig)
    with pytest.raises(NotFound):
        await service(rig).get(user_id=stranger, response_id_text=second.id)
    with pytest.raises(NotFound):
        await respond(rig, stranger, input="Hi", previous_response_id=second.id)
    with pytest.raises(NotFound):
        await service(rig).delete(user_id=stranger, response_id_text=second.id)
    # Deleted: neither read nor continued any more; the conversation keeps its turns.
    await service(rig).delete(user_id=user, response_id_text=second.id)
    with pytest.raises(NotFound):
        await service(rig).get(user_id=user, response_id_text=second.id)
    with pytest.raises(NotFound):
        await respond(rig, user, input="Hi", previous_response_id=second.id)
    assert len(await rig.stored(uuid.UUID(first.conversation_id))) == 4


async def test_earlier_input_items_are_stored_first_and_a_failed_start_removes_them(
    rig: Rig,
) -> None:
    user = await user_of(rig)
    items = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Two plus two?"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Four."}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Times three?"}]},
    ]
    rig.model.enqueue(ProviderAuth("the key is wrong"))  # before the first token
    with pytest.raises(ProviderAuth):
        await respond(rig, user, input=items)
    assert await conversations_of(rig, user) == []

    rig.model.enqueue(Answer("Twelve."))
    parts, _ = await respond(rig, user, input=items)
    done = parts[-1]
    assert isinstance(done, ResponseObject) and done.conversation_id is not None
    assert prompt(rig) == [
        ("system", "Be brief."),
        ("user", "Two plus two?"),
        ("assistant", "Four."),
        ("user", "Times three?"),
    ]
    assert await rig.stored(uuid.UUID(done.conversation_id)) == [
        ("user", "Two plus two?", "complete"),
        ("assistant", "Four.", "complete"),
        ("user", "Times three?", "complete"),
        ("assistant", "Twelve.", "complete"),
    ]
    with pytest.raises(InvalidRequest, match="earlier turns are stored"):
        await respond(rig, user, input=items, previous_response_id=done.id)


async def test_a_failure_mid_answer_is_a_failed_response_whose_partial_answer_is_kept(
    rig: Rig,
) -> None:
    user = await user_of(rig)
    rig.model.enqueue(Answer("one two three four", fail_after=2, error=ProviderTimeout("slow")))
    parts, _ = await respond(rig, user, input="Count.", stream=True)
    failed = parts[-1]
    assert isinstance(failed, ResponseFailed) and type(failed.error) is ProviderTimeout
    assert failed.response.status == "failed" and failed.response.output[0].status == "incomplete"
    assert failed.response.error == {"code": "provider_timeout", "message": "slow"}
    kept = await service(rig).get(user_id=user, response_id_text=failed.response.id)
    assert kept.status == "failed" and kept.output[0].content[0].text == "one two "


async def test_store_false_keeps_nothing(rig: Rig) -> None:
    user = await user_of(rig)
    rig.model.enqueue(Answer("Noted: 7."), Answer("Seven."))
    parts, _ = await respond(rig, user, input="Remember 7.")
    kept = parts[-1]
    assert isinstance(kept, ResponseObject)
    parts, _ = await respond(
        rig, user, input="Which?", previous_response_id=kept.id, store=False, max_output_tokens=8
    )
    answer = parts[-1]
    assert isinstance(answer, ResponseObject) and answer.store is False
    assert answer.output[0].content[0].text == "Seven." and answer.conversation_id is None
    assert prompt(rig)[1:] == [
        ("user", "Remember 7."),
        ("assistant", "Noted: 7."),
        ("user", "Which?"),
    ]
    assert len(await rig.stored(uuid.UUID(str(kept.conversation_id)))) == 2
    with pytest.raises(NotFound):
        await service(rig).get(user_id=user, response_id_text=answer.id)


def test_streamed_events_are_numbered_in_openais_order() -> None:
    head = ResponseObject(
        id=f"resp_{uuid.uuid4().hex}", created_at=1, status="in_progress", model="m"
    )
    events = ResponseEvents(head)
    final = finished(head, text="ab", status="completed", usage=ResponseUsage.of(3, 2), model="m")
    out = [*events.opening(), events.delta("a"), events.delta("b"), *events.closing(final)]
    assert [e["type"] for e in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in out] == list(range(10))
    assert out[6]["text"] == "ab" and out[-1]["response"]["usage"]["total_tokens"] == 5
    assert out[2]["item"]["id"] == out[4]["item_id"] == "msg_" + head.id.removeprefix("resp_")
