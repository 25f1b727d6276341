"""Anthropic's Messages API: `POST /v1/messages`, so the official `anthropic` SDK works
unchanged with base_url=http://host:8000 and a ChatApp API key (sent as `x-api-key` or
`Authorization: Bearer`; `anthropic-version` / `anthropic-beta` are accepted and ignored).

The answer is `ChatService.complete`, as on /v1/chat/completions: the same router and
fallback, limits, usage metering and cache, over any model of the catalog. Errors raised
anywhere on this route (credentials, limits, validation, the turn) are answered by the
app's own handlers, as on every route, then rewritten in Anthropic's envelope
(`AnthropicRoute`); a failure after the first token ends the stream with an `error` event."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sse_starlette import EventSourceResponse, ServerSentEvent

from chatapp.anthropic_api.convert import to_chat_messages, to_message, tool_config
from chatapp.anthropic_api.errors import error_envelope, error_type
from chatapp.anthropic_api.protocol import MessagesRequest, message_id
from chatapp.anthropic_api.stream import AnswerEvents, Event
from chatapp.llm.base import collect
from chatapp.logs import current_request
from chatapp.rag.schemas import RagOptions
from deployments.ingress.deps import ApiChatUser, CacheModeDep, StateDep
from deployments.ingress.errors import error_body

_KEPT_HEADERS = ("retry-after", "www-authenticate")


def _anthropic(status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """ChatApp's error answer (status, OpenAI-style envelope) in Anthropic's shape."""
    error = body.get("error") or {}
    status, kind = error_type(status)
    message = str(error.get("message") or "the request failed")
    return status, error_envelope(kind, message, request_id=error.get("request_id"))


def _handler_for(request: Request, exc: Exception) -> Callable[..., Any] | None:
    """The app's exception handler for `exc` (the most specific class first)."""
    handlers: dict[Any, Callable[..., Any]] = request.app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


class AnthropicRoute(APIRoute):
    """A route whose errors come back in Anthropic's envelope and status codes (400 for a
    bad request, 529 for an overloaded service), with ChatApp's `Retry-After`; every
    answer names its request in `request-id` too (X-Request-ID's value), as Anthropic's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handle(request)
            except Exception as exc:
                handler = _handler_for(request, exc)
                if handler is None:
                    raise
                answered: Response = await handler(request, exc)
                status, body = _anthropic(answered.status_code, json.loads(bytes(answered.body)))
                headers = {k: v for k, v in answered.headers.items() if k in _KEPT_HEADERS}
                response = JSONResponse(body, status_code=status, headers=headers)
            if (context := current_request()) is not None:
                # where Anthropic's SDKs read a request's id (`_request_id`, errors' `request_id`)
                response.headers["request-id"] = context.request_id
            return response

        return route


router = APIRouter(prefix="/v1", tags=["anthropic"], route_class=AnthropicRoute)


def _sse(event: Event) -> ServerSentEvent:
    name, data = event
    return ServerSentEvent(json.dumps(data), event=name)


@router.post("/messages", response_model=None)
async def create_message(
    body: MessagesRequest, state: StateDep, user: ApiChatUser, cache: CacheModeDep
) -> Response:
    messages = to_chat_messages(body)
    rag = RagOptions.model_validate(body.model_extra or {})
    chat = state.chat
    answer = await chat.complete(
        user_id=user.id,
        messages=messages,
        params=chat.sampling_params(
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stop_sequences or (),
            whole=not body.stream,
            tools=tool_config(body),
        ),
        model=None if body.model == "auto" else body.model,
        cache=cache,
        knowledge_base=rag.knowledge_base_id,
        rag=rag.rag,
    )
    sources = [s.model_dump(mode="json") for s in answer.sources]
    ident = message_id()

    if not body.stream:
        try:
            completion = await collect(answer.chunks)
        finally:
            await answer.chunks.aclose()
        message = to_message(
            ident,
            completion.text,
            completion.finish,
            requested_model=body.model,
            tool_calls=completion.tool_calls,
        )
        return JSONResponse({**message.model_dump(), **({"sources": sources} if sources else {})})

    answer_events = AnswerEvents(ident, body.model, sources=sources)

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            for event in answer_events.start():
                yield _sse(event)
            async for chunk in answer.chunks:
                for event in answer_events.feed(chunk):
                    yield _sse(event)
        except Exception as exc:  # after the first chunk: the stream's last event
            _, error = _anthropic(*error_body(exc)[:2])
            yield _sse(("error", error))
        finally:
            await answer.chunks.aclose()  # a client that went away stops the generation

    return EventSourceResponse(events(), ping=15)
