"""OpenAI and any OpenAI-compatible endpoint (Azure, hosted open models, a remote vLLM)
through the official `openai` SDK; tools, tool calls and images in OpenAI's shapes
(`openai_wire`). SDK errors are mapped to `chatapp.errors` here only."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx2  # the HTTP client the openai and anthropic SDKs are built on
import openai

from chatapp.errors import (
    ChatAppError,
    ContextWindowExceeded,
    InvalidRequest,
    ProviderAuth,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ServiceUnavailable,
)
from chatapp.llm.base import (
    ChatMessage,
    ChatProvider,
    Chunk,
    Finish,
    SamplingParams,
    TextDelta,
    ToolCallDelta,
)
from chatapp.llm.openai_wire import to_openai, tools_kwargs
from chatapp.llm.resilience import retry_after_from_headers

logger = logging.getLogger(__name__)

_CONTEXT_CODES = {"context_length_exceeded", "string_above_max_length"}


def map_openai_error(exc: BaseException, provider: str) -> ChatAppError:
    """The one boundary where `openai` (and httpx stream) errors become ChatApp errors."""
    if isinstance(exc, ChatAppError):
        return exc
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return ProviderTimeout(f"{provider} timed out")
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return ServiceUnavailable(f"{provider} is unreachable: {type(exc).__name__}")
    if isinstance(exc, openai.RateLimitError):
        return ProviderRateLimited(
            f"{provider} rate limit reached",
            retry_after=retry_after_from_headers(exc.response.headers),
        )
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderAuth(f"{provider} rejected the API key ({exc.status_code}); check its key")
    if isinstance(exc, openai.BadRequestError):
        if exc.code in _CONTEXT_CODES or "context length" in str(exc.message).lower():
            return ContextWindowExceeded(f"the prompt is too long for {provider}: {exc.message}")
        return InvalidRequest(f"{provider} rejected the request: {exc.message}")
    if isinstance(exc, openai.NotFoundError | openai.UnprocessableEntityError):
        return InvalidRequest(f"{provider} rejected the request: {exc.message}")
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code in (502, 503, 504, 529):
            return ServiceUnavailable(f"{provider} is unavailable ({exc.status_code})")
        return ProviderError(f"{provider} failed ({exc.status_code})")
    if isinstance(exc, openai.APIError):  # an error event inside the stream
        return ProviderError(f"{provider} failed: {exc.message}")
    if isinstance(exc, ValueError):  # a malformed event (JSON)
        return ProviderError(f"{provider} sent a malformed event")
    return ProviderError(f"{provider} failed: {type(exc).__name__}")


def _finish_reason(reason: str | None) -> str:
    known = {"length": "length", "content_filter": "content_filter", "tool_calls": "tool_calls"}
    return known.get("tool_calls" if reason == "function_call" else reason or "", "stop")


class OpenAIProvider(ChatProvider):
    """Streams chat completions with usage (`stream_options.include_usage`)."""

    def __init__(self, *, name: str, client: openai.AsyncOpenAI) -> None:
        self.name = name
        self._client = client

    @classmethod
    def create(
        cls,
        *,
        name: str,
        api_key: str,
        base_url: str | None,
        timeout: httpx2.Timeout,
        http_client: httpx2.AsyncClient | None = None,
    ) -> OpenAIProvider:
        """Retries are ChatApp's (tenacity), so the SDK's own are off."""
        client = openai.AsyncOpenAI(
            api_key=api_key or "unset",
            base_url=base_url,
            timeout=timeout,
            max_retries=0,
            http_client=http_client,
        )
        return cls(name=name, client=client)

    async def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams, *, model: str
    ) -> AsyncIterator[Chunk]:
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": to_openai(messages),
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.tools is not None:
            kwargs |= tools_kwargs(params.tools)
        if params.whole:
            async for piece in self._whole(kwargs, model):
                yield piece
            return
        kwargs |= {"stream": True, "stream_options": {"include_usage": True}}
        reason: str | None = None
        prompt_tokens = completion_tokens = deltas = 0
        answered_model = model
        try:
            stream = await self._client.chat.completions.create(**kwargs)
            async with stream:
                async for chunk in stream:
                    answered_model = chunk.model or answered_model
                    if chunk.usage is not None:
                        prompt_tokens = chunk.usage.prompt_tokens
                        completion_tokens = chunk.usage.completion_tokens
                    for choice in chunk.choices:
                        if choice.delta and choice.delta.content:
                            deltas += 1
                            yield TextDelta(choice.delta.content)
                        for call in (choice.delta.tool_calls if choice.delta else None) or ():
                            deltas += 1
                            function = call.function
                            yield ToolCallDelta(
                                call.index,
                                arguments=(function.arguments if function else None) or "",
                                id=call.id,
                                name=function.name if function else None,
                            )
                        if choice.finish_reason:
                            reason = choice.finish_reason
        except Exception as exc:
            raise map_openai_error(exc, self.name) from exc
        if reason is None:
            raise ProviderError(f"{self.name} ended the stream before the answer was complete")
        yield Finish(
            finish_reason=_finish_reason(reason),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens or deltas,
            model=answered_model,
            provider=self.name,
        )

    async def _whole(self, kwargs: dict[str, Any], model: str) -> AsyncIterator[Chunk]:
        """One non-streamed call: the answer as one delta (and one per tool call), then
        its finish."""
        try:
            completion = await self._client.chat.completions.create(**kwargs)
        except Exception as exc:
            raise map_openai_error(exc, self.name) from exc
        if not completion.choices:
            raise ProviderError(f"{self.name} answered without a choice")
        choice = completion.choices[0]
        text = choice.message.content or ""
        usage = completion.usage
        completion_tokens = usage.completion_tokens if usage else 0
        if text:
            yield TextDelta(text, tokens=completion_tokens or 1)
        for number, call in enumerate(choice.message.tool_calls or ()):
            if call.type == "function":
                yield ToolCallDelta(
                    number,
                    arguments=call.function.arguments,
                    id=call.id,
                    name=call.function.name,
                )
        yield Finish(
            finish_reason=_finish_reason(choice.finish_reason),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=completion_tokens,
            model=completion.model or model,
            provider=self.name,
        )

    async def aclose(self) -> None:
        await self._client.close()
