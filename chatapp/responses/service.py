"""ResponsesService: OpenAI's Responses API over ChatApp's own conversations.

A stored response (`store`, the default) is a turn of one of the user's conversations,
run by `ChatService.post_message` like any `/api` turn (shard, history, budget, usage):

- without `previous_response_id` a new conversation is created (it shows in the user's
  list like any other); message items before the question are stored in it first;
- with it, the turn continues that response's conversation, which must still end with
  that response's reply (409 otherwise: ChatApp conversations do not branch);
- when the turn ends a row of `responses` maps the new response id to the conversation,
  its question and its reply, so `GET /v1/responses/{id}` reads it back and the next
  request can continue from it.

A failure before the first token stores nothing: the turn is undone and a conversation
created for it deleted. `store: false` answers through `ChatService.complete` (the
previous response's history, if any, read from SQL) and keeps nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatapp.cache.responses import CacheMode
from chatapp.chat import repository as conversations
from chatapp.chat.completions import CompletionStream
from chatapp.chat.ports import ReplyRecord
from chatapp.chat.schemas import MessageCreate, MessagePublic
from chatapp.chat.service import (
    ChatService,
    TurnDone,
    TurnEvent,
    TurnFailed,
    TurnStarted,
)
from chatapp.config import Settings
from chatapp.errors import ChatAppError, Conflict, InvalidRequest
from chatapp.llm.base import ChatMessage, Finish, TextDelta
from chatapp.openai_api.responses import (
    ResponseInput,
    ResponseObject,
    ResponseRequest,
    ResponseStatus,
    ResponseUsage,
    finished,
    now,
    outcome,
    parse_response_id,
    read_input,
    response_id,
)
from chatapp.rag.schemas import RagOptions
from chatapp.responses import repository
from chatapp.responses.repository import ResponseRow

logger = logging.getLogger(__name__)

_TITLE_CHARS = 60


@dataclass(frozen=True, slots=True)
class ResponseFailed:
    """The model failed after its first token: the response (status failed, the partial
    answer as output, kept when stored) and the error, its class intact."""

    response: ResponseObject
    error: ChatAppError


ResponsePart = TextDelta | ResponseObject | ResponseFailed


@dataclass(frozen=True, slots=True)
class ResponseRun:
    """A response on its way: `head` as it started (status in_progress), then `parts`:
    its text deltas and, last, the finished response (completed, incomplete or failed)."""

    head: ResponseObject
    parts: AsyncGenerator[ResponsePart, None]


class ResponsesService:
    def __init__(
        self,
        *,
        chat: ChatService,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
    ) -> None:
        self._chat = chat
        self._sessions = sessionmaker
        self._settings = settings

    async def get(self, *, user_id: uuid.UUID, response_id_text: str) -> ResponseObject:
        """A stored response of the user's (`NotFound` for anyone else's)."""
        async with self._sessions() as session:
            row = await repository.get_response(
                session=session, user_id=user_id, response_id=parse_response_id(response_id_text)
            )
        stored, reply = row.response, row.reply
        status, incomplete = outcome(reply.status, reply.finish_reason)
        head = ResponseObject(
            id=response_id(stored.id),
            created_at=int(stored.created_at.timestamp()),
            status="in_progress",
            model=stored.model or "auto",
            instructions=stored.instructions,
            previous_response_id=(
                response_id(stored.previous_response_id) if stored.previous_response_id else None
            ),
            metadata=stored.request_metadata or {},
            conversation_id=str(stored.conversation_id),
        )
        error = None
        if status == "failed":
            error = {
                "code": "server_error",
                "message": "the answer was cut short by an error; output holds what came",
            }
        return finished(
            head,
            text=reply.content,
            status=status,
            usage=ResponseUsage.of(reply.prompt_tokens, reply.completion_tokens),
            model=reply.model,
            incomplete=incomplete,
            error=error,
        )

    async def delete(self, *, user_id: uuid.UUID, response_id_text: str) -> None:
        """Forget a stored response of the user's: it can no longer be read or continued;
        its turn stays in the conversation (delete that in /api)."""
        async with self._sessions() as session:
            await repository.delete_response(
                session=session, user_id=user_id, response_id=parse_response_id(response_id_text)
            )

    async def create(
        self, *, user_id: uuid.UUID, request: ResponseRequest, cache: CacheMode = "auto"
    ) -> ResponseRun:
        """Start answering `request`; errors before the first token are raised here (and
        nothing is stored)."""
        given = read_input(request, max_chars=self._settings.chat.max_message_chars)
        try:
            rag = RagOptions.model_validate(request.model_extra or {})
        except ValidationError as exc:
            raise InvalidRequest(f"knowledge_base_id or rag: {exc.errors()[0]['msg']}") from None
        previous = None
        if request.previous_response_id is not None:
            async with self._sessions() as session:
                previous = await repository.get_response(
                    session=session,
                    user_id=user_id,
                    response_id=parse_response_id(request.previous_response_id),
                )
        head = ResponseObject(
            id=response_id(uuid.uuid4()),
            created_at=now(),
            status="in_progress",
            model=request.model,
            instructions=request.instructions,
            previous_response_id=request.previous_response_id,
            metadata=request.metadata or {},
            max_output_tokens=request.max_output_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            store=request.store,
        )
        if not request.store:
            return await self._unstored(user_id, head, request, given, rag, previous, cache)
        return await self._stored(user_id, head, request, given, rag, previous, cache)

    # -- store: a turn of a conversation -----------------------------------------------

    async def _stored(
        self,
        user_id: uuid.UUID,
        head: ResponseObject,
        request: ResponseRequest,
        given: ResponseInput,
        rag: RagOptions,
        previous: ResponseRow | None,
        cache: CacheMode,
    ) -> ResponseRun:
        try:
            body = MessageCreate(
                content=given.question,
                stream=request.stream,
                max_tokens=request.max_output_tokens,
                temperature=request.temperature,
                model=None if request.model == "auto" else request.model,
                knowledge_base_id=rag.knowledge_base_id,
                # RAG is opt-in on /v1, as for chat completions
                rag=rag.rag or ("off" if rag.knowledge_base_id is None else None),
            )
        except ValidationError as exc:
            raise InvalidRequest(f"input: {exc.errors()[0]['msg']}") from None
        created = None
        if previous is not None:
            if given.earlier:
                raise InvalidRequest(
                    "input: with previous_response_id send only the new user message (and "
                    "system or developer items): the earlier turns are stored already"
                )
            if not previous.latest:
                raise Conflict(
                    f"previous_response_id: {request.previous_response_id} is no longer the "
                    "latest turn of its conversation; continue from its latest response "
                    "(conversations do not branch)"
                )
            conversation_id = previous.reply.conversation_id
        else:
            conversation_id = created = await self._new_conversation(user_id, given)
        head = head.model_copy(update={"conversation_id": str(conversation_id)})
        try:
            events = await self._chat.post_message(
                user_id=user_id,
                conversation_id=conversation_id,
                body=body,
                cache=cache,
                system_prompt=given.instructions,
                top_p=request.top_p,
            )
            # Until the first token, so errors before it are ordinary HTTP errors.
            first: list[TurnEvent] = []
            async for event in events:
                first.append(event)
                if not isinstance(event, TurnStarted):
                    break
        except BaseException:
            if created is not None:
                await self._discard(user_id, created)
            raise
        parts = self._turn_parts(user_id, head, request, previous, first, events)
        return ResponseRun(head, parts)

    async def _new_conversation(self, user_id: uuid.UUID, given: ResponseInput) -> uuid.UUID:
        """A conversation for a first response, holding the input's earlier turns."""
        first_user = next((m.content for m in given.earlier if m.role == "user"), "")
        title = next(iter(first_user.strip().splitlines()), "")[:_TITLE_CHARS]
        async with self._sessions() as session:
            conversation = await conversations.create_conversation(
                session=session, user_id=user_id, title=title
            )
            # Stored before any shard reads the conversation: its first turn loads them.
            for seq, message in enumerate(given.earlier):
                await conversations.append_message(
                    session=session,
                    conversation_id=conversation.id,
                    seq=seq,
                    message=(
                        message.content
                        if message.role == "user"
                        else ReplyRecord(
                            content=message.content, status="complete", finish_reason="stop"
                        )
                    ),
                )
            return conversation.id

    async def _discard(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        try:
            await self._chat.delete_conversation(user_id=user_id, conversation_id=conversation_id)
        except ChatAppError as exc:
            logger.warning(
                "conversation %s of a failed response not deleted: %s", conversation_id, exc
            )

    async def _turn_parts(
        self,
        user_id: uuid.UUID,
        head: ResponseObject,
        request: ResponseRequest,
        previous: ResponseRow | None,
        first: list[TurnEvent],
        events: AsyncGenerator[TurnEvent, None],
    ) -> AsyncGenerator[ResponsePart, None]:
        asked: MessagePublic | None = None
        pending = list(first)
        try:
            while True:
                if pending:
                    event = pending.pop(0)
                else:
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        return
                if isinstance(event, TurnStarted):
                    asked = event.user_message
                elif isinstance(event, TextDelta):
                    yield event
                elif isinstance(event, TurnFailed):
                    error = {"code": event.error.code, "message": event.error.message}
                    if event.message is None:  # nothing stored
                        failed = finished(
                            head, text="", status="failed", usage=None, model=None, error=error
                        )
                    else:
                        await self._record(user_id, head, request, previous, asked, event.message)
                        failed = self._answered(head, event.message, "failed", None, error)
                    yield ResponseFailed(failed, event.error)
                elif isinstance(event, TurnDone):
                    reply = event.message
                    await self._record(user_id, head, request, previous, asked, reply)
                    status, incomplete = outcome(reply.status, reply.finish_reason)
                    yield self._answered(head, reply, status, incomplete, None)
        finally:
            await events.aclose()  # a client gone: the turn stores its partial reply now

    @staticmethod
    def _answered(
        head: ResponseObject,
        reply: MessagePublic,
        status: ResponseStatus,
        incomplete: dict[str, str] | None,
        error: dict[str, str] | None,
    ) -> ResponseObject:
        return finished(
            head,
            text=reply.content,
            status=status,
            usage=ResponseUsage.of(reply.prompt_tokens, reply.completion_tokens),
            model=reply.model,
            incomplete=incomplete,
            error=error,
        )

    async def _record(
        self,
        user_id: uuid.UUID,
        head: ResponseObject,
        request: ResponseRequest,
        previous: ResponseRow | None,
        asked: MessagePublic | None,
        reply: MessagePublic,
    ) -> None:
        assert asked is not None and head.conversation_id is not None
        async with self._sessions() as session:
            await repository.add_response(
                session=session,
                response_id=parse_response_id(head.id),
                user_id=user_id,
                conversation_id=uuid.UUID(head.conversation_id),
                input_message_id=asked.id,
                reply_message_id=reply.id,
                previous_response_id=previous.response.id if previous else None,
                instructions=request.instructions,
                metadata=request.metadata,
                model=request.model,
                created_at=datetime.fromtimestamp(head.created_at, UTC),
            )

    # -- store: false, nothing kept ------------------------------------------------------

    async def _unstored(
        self,
        user_id: uuid.UUID,
        head: ResponseObject,
        request: ResponseRequest,
        given: ResponseInput,
        rag: RagOptions,
        previous: ResponseRow | None,
        cache: CacheMode,
    ) -> ResponseRun:
        system = given.instructions or self._settings.chat.system_prompt
        messages = [ChatMessage("system", system)]
        if previous is not None:
            async with self._sessions() as session:
                rows, _ = await conversations.list_messages(
                    session=session,
                    conversation_id=previous.reply.conversation_id,
                    limit=self._settings.shards.hot_turns,
                    before=previous.reply.seq + 1,
                )
            messages += [ChatMessage(r.role, r.content) for r in rows]  # type: ignore[arg-type]
        messages += [*given.earlier, ChatMessage("user", given.question)]
        chat = self._chat
        answer = await chat.complete(
            user_id=user_id,
            messages=messages,
            params=chat.sampling_params(
                max_tokens=request.max_output_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                whole=not request.stream,
            ),
            model=None if request.model == "auto" else request.model,
            cache=cache,
            knowledge_base=rag.knowledge_base_id,
            rag=rag.rag,
        )
        return ResponseRun(head, _completion_parts(head, answer))


async def _completion_parts(
    head: ResponseObject, answer: CompletionStream
) -> AsyncGenerator[ResponsePart, None]:
    texts: list[str] = []
    try:
        async for chunk in answer.chunks:
            if isinstance(chunk, TextDelta):
                texts.append(chunk.text)
                yield chunk
            elif isinstance(chunk, Finish):
                status, incomplete = outcome("complete", chunk.finish_reason)
                yield finished(
                    head,
                    text="".join(texts),
                    status=status,
                    usage=ResponseUsage.of(chunk.prompt_tokens, chunk.completion_tokens),
                    model=chunk.model or None,
                    incomplete=incomplete,
                )
                return
    except ChatAppError as exc:
        error = {"code": exc.code, "message": exc.message}
        failed = finished(
            head, text="".join(texts), status="failed", usage=None, model=None, error=error
        )
        yield ResponseFailed(failed, exc)
    finally:
        await answer.chunks.aclose()
