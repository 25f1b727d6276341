"""OpenAI-compatible /v1: chat completions (streamed and not, with usage) and models, so
the official `openai` SDK works unchanged with base_url=http://host:8000/v1.

RAG is opt-in here (clients send their own prompts): `knowledge_base_id` and/or `rag`
in the request body (`extra_body` in the SDK) ground the answer in a knowledge base, and
the response (the last streamed chunk) carries `sources`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from chatapp.errors import ChatAppError, InvalidRequest
from chatapp.llm.base import ChatMessage, Finish, StreamError, TextDelta
from chatapp.openai_api.protocol import (
    ChatCompletionRequest,
    ModelCard,
    ModelList,
    completion_id,
    now,
)
from chatapp.rag.prompt import grounded_system_prompt, public_sources
from chatapp.rag.schemas import RagOptions
from deployments.ingress.deps import ApiChatUser, ApiUser, CacheHeader, StateDep
from deployments.ingress.errors import error_body
from deployments.ingress.turns import cache_mode, sampling_params, stream_model

router = APIRouter(prefix="/v1", tags=["openai"])

_ROLES = {"developer": "system"}


@router.get("/models")
async def list_models(state: StateDep, _user: ApiUser) -> ModelList:
    models: list[dict[str, Any]] = await state.router.models.remote()
    return ModelList(
        data=[
            ModelCard(
                id=m["model"],
                context_window=m.get("context_window"),
                owned_by=str(m.get("provider") or "chatapp"),
            )
            for m in models
        ]
    )


def _usage(finish: Finish) -> dict[str, Any]:
    """OpenAI's usage object, plus who answered, its cost and whether it was cached."""
    return {
        "prompt_tokens": finish.prompt_tokens,
        "completion_tokens": finish.completion_tokens,
        "total_tokens": finish.prompt_tokens + finish.completion_tokens,
        "provider": finish.provider or None,
        "cost_usd": finish.cost_usd,
        "cached": finish.cached,
        "fallback_from": finish.fallback_from,
    }


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    state: StateDep,
    user: ApiChatUser,
    x_chatapp_cache: CacheHeader = None,
) -> Response:
    messages = [
        ChatMessage(_ROLES.get(m.role, m.role), m.text())  # type: ignore[arg-type]
        for m in body.messages
    ]
    if not any(m.role == "user" and m.content.strip() for m in messages):
        raise InvalidRequest("messages: at least one non-empty user message is required")
    rag = RagOptions.model_validate(body.model_extra or {})
    grounding = await state.turns.retrieve(
        next(m.content for m in reversed(messages) if m.role == "user"),
        knowledge_base=rag.knowledge_base_id,
        rag=rag.rag,
        default_kb=rag.rag is not None,
    )
    sources = [
        s.model_dump(mode="json")
        for s in public_sources(grounding, snippet_chars=state.settings.rag.snippet_chars)
    ]
    if grounding:
        if messages[0].role == "system":
            system = grounded_system_prompt(messages[0].content, grounding)
            messages[0] = ChatMessage("system", system)
        else:
            system = grounded_system_prompt("", grounding).strip()
            messages.insert(0, ChatMessage("system", system))
    params = sampling_params(
        state.settings,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=[body.stop] if isinstance(body.stop, str) else body.stop,
        seed=body.seed,
    )
    model = None if body.model == "auto" else body.model
    await state.turns.check_budget(user.id)
    chunks = stream_model(
        state.router, messages, params, model, user_id=user.id, cache=cache_mode(x_chatapp_cache)
    )
    first = await anext(chunks)  # errors before the first token are plain HTTP errors
    ident, created = completion_id(), now()

    if not body.stream:
        parts: list[str] = []
        chunk: TextDelta | Finish | StreamError = first
        while True:
            if isinstance(chunk, TextDelta):
                parts.append(chunk.text)
            elif isinstance(chunk, Finish):
                await state.turns.record_usage(user.id, chunk)
                break
            else:
                raise ChatAppError(chunk.message)
            chunk = await anext(chunks)
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": chunk.model or body.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(parts)},
                        "finish_reason": chunk.finish_reason,
                    }
                ],
                "usage": _usage(chunk),
                **({"sources": sources} if sources else {}),
            }
        )

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def frame(delta: dict[str, Any], finish_reason: str | None = None, model: str = "") -> str:
        return json.dumps(
            {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model or body.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
        )

    async def events() -> AsyncIterator[ServerSentEvent]:
        chunk: TextDelta | Finish | StreamError = first
        try:
            yield ServerSentEvent(frame({"role": "assistant", "content": ""}))
            while True:
                if isinstance(chunk, TextDelta):
                    yield ServerSentEvent(frame({"content": chunk.text}))
                elif isinstance(chunk, Finish):
                    await state.turns.record_usage(user.id, chunk)
                    last = json.loads(frame({}, chunk.finish_reason, chunk.model))
                    if sources:
                        last["sources"] = sources
                    yield ServerSentEvent(json.dumps(last))
                    if include_usage:
                        payload = json.loads(frame({}, None, chunk.model))
                        payload["choices"] = []
                        payload["usage"] = _usage(chunk)
                        yield ServerSentEvent(json.dumps(payload))
                    break
                else:
                    raise ChatAppError(chunk.message)
                chunk = await anext(chunks)
        except ChatAppError as exc:
            _, error, _ = error_body(exc)
            yield ServerSentEvent(json.dumps(error))
        finally:
            await chunks.aclose()  # a client that went away stops the generation at once
        yield ServerSentEvent("[DONE]")

    return EventSourceResponse(events(), ping=15)
