"""OpenAI Responses API: POST /v1/responses (streamed or not), GET and DELETE
/v1/responses/{id}, kept server-side as turns of the user's conversations
(`chatapp/responses/service.py`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from chatapp.errors import ChatAppError, ServiceUnavailable
from chatapp.llm.base import TextDelta
from chatapp.openai_api.responses import (
    ResponseEvents,
    ResponseObject,
    ResponseRequest,
    finished,
)
from chatapp.responses.service import ResponseFailed, ResponseRun, ResponsesService
from deployments.ingress.deps import ApiChatUser, ApiUser, CacheModeDep, IngressState, StateDep
from deployments.ingress.errors import error_body

router = APIRouter(prefix="/v1/responses", tags=["openai"])


def _service(state: IngressState) -> ResponsesService:
    return ResponsesService(
        chat=state.chat, sessionmaker=state.sessionmaker, settings=state.settings
    )


@router.post(
    "",
    response_model=None,
    responses={
        200: {
            "description": "The `response` object, or with `stream` a `text/event-stream` of "
            "Responses events (response.created ... response.completed)."
        }
    },
)
async def create_response(
    body: ResponseRequest, state: StateDep, user: ApiChatUser, cache: CacheModeDep
) -> Response:
    run = await _service(state).create(user_id=user.id, request=body, cache=cache)
    if body.stream:
        return EventSourceResponse(_events(run), ping=15)
    try:
        async for part in run.parts:
            if isinstance(part, ResponseObject):
                return JSONResponse(part.model_dump(mode="json"))
            if isinstance(part, ResponseFailed):
                # The model failed mid-answer: its error, with the response (its partial
                # answer, kept when stored) alongside.
                status, error, headers = error_body(part.error)
                error["response"] = part.response.model_dump(mode="json")
                return JSONResponse(error, status_code=status, headers=headers)
    finally:
        await run.parts.aclose()
    raise ServiceUnavailable("the answer ended before it was complete; retry")


async def _events(run: ResponseRun) -> AsyncIterator[ServerSentEvent]:
    events = ResponseEvents(run.head)

    def sse(event: dict[str, object]) -> ServerSentEvent:
        return ServerSentEvent(json.dumps(event), event=str(event["type"]))

    texts: list[str] = []
    try:
        for event in events.opening():
            yield sse(event)
        async for part in run.parts:
            if isinstance(part, TextDelta):
                texts.append(part.text)
                yield sse(events.delta(part.text))
                continue
            final = part.response if isinstance(part, ResponseFailed) else part
            for event in events.closing(final):
                yield sse(event)
            return
    except ChatAppError as exc:  # e.g. the response not recorded after the turn
        error = {"code": exc.code, "message": exc.message}
        failed = finished(run.head, text="".join(texts), status="failed", usage=None, model=None)
        for event in events.closing(failed.model_copy(update={"error": error})):
            yield sse(event)
    finally:
        await run.parts.aclose()  # a client that went away stops the generation


@router.get("/{response_id}")
async def get_response(response_id: str, state: StateDep, user: ApiUser) -> ResponseObject:
    return await _service(state).get(user_id=user.id, response_id_text=response_id)


@router.delete("/{response_id}")
async def delete_response(response_id: str, state: StateDep, user: ApiUser) -> dict[str, object]:
    """Forget the response (its turn stays in the conversation)."""
    await _service(state).delete(user_id=user.id, response_id_text=response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}
