"""/api/conversations: create, list (paged, searchable), read (messages paged), rename,
delete, post a message (or edit one and resend) answered by a stream of server-sent
events, and regenerate the last answer."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from chatapp.chat import repository, summaries
from chatapp.chat.schemas import (
    MAX_SEQ,
    ConversationCreate,
    ConversationDetail,
    ConversationPage,
    ConversationPublic,
    ConversationUpdate,
    MessageCreate,
    MessagePublic,
    RegenerateRequest,
    TurnResult,
)
from chatapp.chat.service import TurnDone, TurnEvent, TurnFailed, TurnStarted
from chatapp.errors import NotFound
from chatapp.llm.base import TextDelta
from deployments.ingress.deps import (
    CacheModeDep,
    ChatUser,
    CurrentUser,
    ReadSessionDep,
    SessionDep,
    StateDep,
)
from deployments.ingress.errors import error_body

router = APIRouter(prefix="/api/conversations", tags=["conversations"])


@router.post("", status_code=201)
async def create_conversation(
    body: ConversationCreate, user: CurrentUser, session: SessionDep
) -> ConversationPublic:
    conversation = await repository.create_conversation(
        session=session, user_id=user.id, title=body.title
    )
    return ConversationPublic.model_validate(conversation)


@router.get("")
async def list_conversations(
    user: CurrentUser,
    session: ReadSessionDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
    q: Annotated[
        str | None,
        Query(
            description="Only conversations whose title or messages contain this text "
            "(case-insensitive; at most CHAT_MAX_SEARCH_CHARS characters, searches "
            "rate-limited by CHAT_SEARCH_LIMIT).",
        ),
    ] = None,
) -> ConversationPage:
    chat = state.settings.chat
    text = repository.search_text(q, max_chars=chat.max_search_chars)
    if text is not None:
        await state.limiter.hit(chat.search_limit, "search", str(user.id), what="searches")
    rows, next_cursor = await repository.list_conversations(
        session=session, user_id=user.id, limit=limit, cursor=cursor, q=text
    )
    return ConversationPage(
        items=[ConversationPublic.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get("/{conversation_id}")
async def get_conversation(
    conversation_id: uuid.UUID,
    user: CurrentUser,
    session: ReadSessionDep,
    primary: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="Messages with seq below this.")
    ] = None,
) -> ConversationDetail:
    try:
        conversation = await repository.get_conversation(
            session=session, user_id=user.id, conversation_id=conversation_id
        )
    except NotFound:
        # Not on the read replica yet (just created, the replica lags): the primary says
        # whether it exists, so a new conversation never answers 404.
        session = primary
        conversation = await repository.get_conversation(
            session=session, user_id=user.id, conversation_id=conversation_id
        )
    rows, has_more = await repository.list_messages(
        session=session, conversation_id=conversation_id, limit=limit, before=before
    )
    summary = await summaries.newest_summary(session=session, conversation_id=conversation_id)
    return ConversationDetail(
        **ConversationPublic.model_validate(conversation).model_dump(),
        messages=[MessagePublic.model_validate(r) for r in rows],
        has_more=has_more,
        summary=summary,
    )


@router.patch("/{conversation_id}")
async def rename_conversation(
    conversation_id: uuid.UUID, body: ConversationUpdate, user: CurrentUser, session: SessionDep
) -> ConversationPublic:
    conversation = await repository.rename_conversation(
        session=session, user_id=user.id, conversation_id=conversation_id, title=body.title
    )
    return ConversationPublic.model_validate(conversation)


@router.delete("/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: uuid.UUID, user: CurrentUser, state: StateDep
) -> Response:
    await state.chat.delete_conversation(user_id=user.id, conversation_id=conversation_id)
    return Response(status_code=204)


def _usage(message: MessagePublic) -> dict[str, int]:
    return {
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "total_tokens": message.prompt_tokens + message.completion_tokens,
    }


def _done_payload(message: MessagePublic) -> dict[str, object]:
    return {
        "message_id": str(message.id),
        "seq": message.seq,
        "finish_reason": message.finish_reason,
        "model": message.model,
        "provider": message.provider,
        "usage": {**_usage(message), "cost_usd": message.cost_usd, "cached": message.cached},
        "sources": [s.model_dump(mode="json") for s in message.sources],
    }


def _sse(event: TurnEvent) -> ServerSentEvent:
    if isinstance(event, TextDelta):
        return ServerSentEvent(json.dumps({"text": event.text}), event="token")
    if isinstance(event, TurnStarted):
        return ServerSentEvent(
            json.dumps(
                {"user_message_id": str(event.user_message.id), "seq": event.user_message.seq}
            ),
            event="start",
        )
    if isinstance(event, TurnDone):
        done = {**_done_payload(event.message), "fallback_from": event.fallback_from}
        return ServerSentEvent(json.dumps(done), event="done")
    _, body, _ = error_body(event.error)
    if event.message is not None:
        body["message_id"] = str(event.message.id)
        body["status"] = "incomplete"
    return ServerSentEvent(json.dumps(body), event="error")


@router.post(
    "/{conversation_id}/messages",
    responses={
        200: {
            "description": "`text/event-stream` of `start`, `token`... and a final "
            "`done` (message id, usage, finish reason, sources) or `error` event; "
            "JSON when `stream` is false."
        }
    },
)
async def post_message(
    conversation_id: uuid.UUID,
    body: MessageCreate,
    user: ChatUser,
    state: StateDep,
    cache: CacheModeDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Any unique string (e.g. a UUID) chosen by the client for this "
            "message: posting it again with the same key (a retry after a lost response) "
            "returns the stored turn instead of a second one (`Idempotent-Replayed: true`); "
            "409 while that turn is still running, 422 if the key was used for another "
            "message.",
        ),
    ] = None,
) -> Response:
    events = await state.chat.post_message(
        user_id=user.id,
        conversation_id=conversation_id,
        body=body,
        cache=cache,
        idempotency_key=idempotency_key,
    )
    return await _respond(events, stream=body.stream)


@router.post(
    "/{conversation_id}/regenerate",
    responses={200: {"description": "The same stream (or JSON) as posting a message."}},
)
async def regenerate(
    conversation_id: uuid.UUID,
    user: ChatUser,
    state: StateDep,
    cache: CacheModeDep,
    body: RegenerateRequest | None = None,
) -> Response:
    """Answer the last user message again, replacing its reply."""
    options = body or RegenerateRequest()
    events = await state.chat.regenerate(
        user_id=user.id, conversation_id=conversation_id, options=options, cache=cache
    )
    return await _respond(events, stream=options.stream)


async def _respond(events: AsyncGenerator[TurnEvent, None], *, stream: bool) -> Response:
    # Pull until the first token, so errors before it are ordinary HTTP errors.
    head: list[TurnEvent] = []
    async for event in events:
        head.append(event)
        if not isinstance(event, TurnStarted):
            break
    replayed = isinstance(head[0], TurnStarted) and head[0].replayed
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    if not stream:
        async for event in events:
            head.append(event)
        response = _json_result(head)
        response.headers.update(headers or {})
        return response

    async def sse() -> AsyncIterator[ServerSentEvent]:
        try:
            for event in head:
                yield _sse(event)
            async for event in events:
                yield _sse(event)
        finally:
            # The client went away (or all was sent): close the turn now, not whenever the
            # garbage collector gets to it, so generation stops and the partial reply is
            # stored at once.
            await events.aclose()

    return EventSourceResponse(sse(), ping=15, headers=headers)


def _json_result(events: list[TurnEvent]) -> JSONResponse:
    started = next(e for e in events if isinstance(e, TurnStarted))
    last = events[-1]
    if isinstance(last, TurnFailed):
        status, body, headers = error_body(last.error)
        if last.message is not None:
            body["message"] = last.message.model_dump(mode="json")
        return JSONResponse(body, status_code=status, headers=headers)
    assert isinstance(last, TurnDone)
    result = TurnResult(
        user_message=started.user_message, message=last.message, fallback_from=last.fallback_from
    )
    return JSONResponse(result.model_dump(mode="json"))
