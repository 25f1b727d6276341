"""OpenAI-compatible /v1: chat completions (streamed and not, with usage) and models, so
the official `openai` SDK works unchanged with base_url=http://host:8000/v1.

RAG is opt-in here (clients send their own prompts): `knowledge_base_id` and/or `rag`
in the request body (`extra_body` in the SDK) ground the answer in a knowledge base, and
the response (the last streamed chunk) carries `sources`.

Tools, tool calls and images travel in OpenAI's shapes (`chatapp.openai_api.convert` reads
them, `chatapp.llm.openai_wire` writes the answer's calls); fields that would be silently
ignored while they change the answer are refused (400, listed in that module)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from chatapp.errors import ChatAppError
from chatapp.llm.base import Finish, TextDelta, ToolCallDelta, collect
from chatapp.llm.openai_wire import tool_call, tool_call_delta
from chatapp.openai_api.convert import refuse_unserved, to_messages, tool_config
from chatapp.openai_api.protocol import (
    ChatCompletionRequest,
    ModelCard,
    ModelList,
    completion_id,
    now,
)
from chatapp.rag.schemas import RagOptions
from deployments.ingress.deps import ApiChatUser, ApiUser, CacheModeDep, StateDep
from deployments.ingress.errors import error_body

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models")
async def list_models(state: StateDep, _user: ApiUser) -> ModelList:
    models = await state.router.models()
    return ModelList(
        data=[
            ModelCard(
                id=m["model"],
                context_window=m.get("context_window"),
                owned_by=str(m.get("provider") or "chatapp"),
                supports_tools=m.get("supports_tools"),
                supports_images=m.get("supports_images"),
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
    body: ChatCompletionRequest, state: StateDep, user: ApiChatUser, cache: CacheModeDep
) -> Response:
    refuse_unserved(body)
    rag = RagOptions.model_validate(body.model_extra or {})
    chat = state.chat
    answer = await chat.complete(
        user_id=user.id,
        messages=to_messages(body),
        params=chat.sampling_params(
            max_tokens=body.max_completion_tokens or body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=[body.stop] if isinstance(body.stop, str) else body.stop or (),
            seed=body.seed,
            whole=not body.stream,
            tools=tool_config(body),
        ),
        model=None if body.model == "auto" else body.model,
        cache=cache,
        knowledge_base=rag.knowledge_base_id,
        rag=rag.rag,
    )
    sources = [s.model_dump(mode="json") for s in answer.sources]
    ident, created = completion_id(), now()

    if not body.stream:
        try:
            completion = await collect(answer.chunks)
        finally:
            await answer.chunks.aclose()
        finish = completion.finish
        message: dict[str, Any] = {"role": "assistant", "content": completion.text}
        if completion.tool_calls:
            message["content"] = completion.text or None
            message["tool_calls"] = [tool_call(c) for c in completion.tool_calls]
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": finish.model or body.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": finish.finish_reason,
                    }
                ],
                "usage": _usage(finish),
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
        try:
            yield ServerSentEvent(frame({"role": "assistant", "content": ""}))
            async for chunk in answer.chunks:
                if isinstance(chunk, TextDelta):
                    yield ServerSentEvent(frame({"content": chunk.text}))
                    continue
                if isinstance(chunk, ToolCallDelta):
                    yield ServerSentEvent(frame({"tool_calls": [tool_call_delta(chunk)]}))
                    continue
                last = json.loads(frame({}, chunk.finish_reason, chunk.model))
                if sources:
                    last["sources"] = sources
                yield ServerSentEvent(json.dumps(last))
                if include_usage:
                    payload = json.loads(frame({}, None, chunk.model))
                    payload["choices"] = []
                    payload["usage"] = _usage(chunk)
                    yield ServerSentEvent(json.dumps(payload))
        except ChatAppError as exc:
            _, error, _ = error_body(exc)
            yield ServerSentEvent(json.dumps(error))
        finally:
            await answer.chunks.aclose()  # a client that went away stops the generation
        yield ServerSentEvent("[DONE]")

    return EventSourceResponse(events(), ping=15)
