"""Anthropic's Messages API through the official `anthropic` SDK: the system prompt goes
in `system`, turns alternate user/assistant, usage comes from message_start and
message_delta; tools, tool calls and images in Anthropic's shapes (`anthropic_wire`).
SDK errors are mapped to `chatapp.errors` here only."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anthropic
import httpx2  # the HTTP client the openai and anthropic SDKs are built on

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
from chatapp.llm.anthropic_wire import STOP_REASONS, to_anthropic, tools_kwargs
from chatapp.llm.base import (
    ChatMessage,
    ChatProvider,
    Chunk,
    Finish,
    SamplingParams,
    TextDelta,
    ToolCallDelta,
)
from chatapp.llm.resilience import retry_after_from_headers

logger = logging.getLogger(__name__)

__all__ = ["AnthropicProvider", "map_anthropic_error", "to_anthropic"]


def map_anthropic_error(exc: BaseException, provider: str) -> ChatAppError:
    """The one boundary where `anthropic` (and httpx stream) errors become ChatApp errors."""
    if isinstance(exc, ChatAppError):
        return exc
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return ProviderTimeout(f"{provider} timed out")
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
        return ServiceUnavailable(f"{provider} is unreachable: {type(exc).__name__}")
    if isinstance(exc, anthropic.RateLimitError):
        return ProviderRateLimited(
            f"{provider} rate limit reached",
            retry_after=retry_after_from_headers(exc.response.headers),
        )
    if isinstance(exc, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
        return ProviderAuth(f"{provider} rejected the API key ({exc.status_code}); check its key")
    if isinstance(exc, anthropic.BadRequestError):
        if "prompt is too long" in str(exc.message).lower():
            return ContextWindowExceeded(f"the prompt is too long for {provider}: {exc.message}")
        return InvalidRequest(f"{provider} rejected the request: {exc.message}")
    if isinstance(exc, anthropic.NotFoundError | anthropic.UnprocessableEntityError):
        return InvalidRequest(f"{provider} rejected the request: {exc.message}")
    if isinstance(exc, anthropic.APIStatusError):
        if exc.status_code in (502, 503, 504, 529):
            return ServiceUnavailable(f"{provider} is unavailable ({exc.status_code})")
        return ProviderError(f"{provider} failed ({exc.status_code})")
    if isinstance(exc, anthropic.APIError):
        return ProviderError(f"{provider} failed: {exc.message}")
    if isinstance(exc, ValueError):
        return ProviderError(f"{provider} sent a malformed event")
    return ProviderError(f"{provider} failed: {type(exc).__name__}")


class AnthropicProvider(ChatProvider):
    def __init__(self, *, name: str, client: anthropic.AsyncAnthropic) -> None:
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
    ) -> AnthropicProvider:
        client = anthropic.AsyncAnthropic(
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
        system, turns = to_anthropic(messages)
        if not turns:
            raise InvalidRequest("the conversation has no user message")
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": turns,
            "max_tokens": params.max_tokens,
        }
        # Not sent: temperature and top_p. API version 2026-10-21 (which this SDK
        # generation, anthropic>=2, sends) answers 400 to any of temperature, top_p and
        # top_k, even at their defaults, and the SDK no longer takes them.
        if system:
            kwargs["system"] = system
        if params.stop:
            kwargs["stop_sequences"] = list(params.stop)
        if params.tools is not None:
            kwargs |= tools_kwargs(params.tools)
        if params.whole:
            async for piece in self._whole(kwargs, model):
                yield piece
            return
        kwargs["stream"] = True
        reason: str | None = None
        matched: str | None = None  # the stop sequence that ended it, if one did
        prompt_tokens = completion_tokens = 0
        answered_model = model
        calls: dict[int, int] = {}  # content block index -> tool call number
        try:
            stream = await self._client.messages.create(**kwargs)
            async with stream:
                async for event in stream:
                    if event.type == "message_start":
                        answered_model = event.message.model or model
                        prompt_tokens = event.message.usage.input_tokens
                    elif event.type == "content_block_start":
                        block = event.content_block
                        if block.type == "tool_use":
                            calls[event.index] = len(calls)
                            yield ToolCallDelta(calls[event.index], id=block.id, name=block.name)
                    elif event.type == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta" and delta.text:
                            yield TextDelta(delta.text)
                        elif delta.type == "input_json_delta" and event.index in calls:
                            if delta.partial_json:
                                yield ToolCallDelta(
                                    calls[event.index], arguments=delta.partial_json
                                )
                    elif event.type == "message_delta":
                        reason = event.delta.stop_reason or reason
                        matched = event.delta.stop_sequence or matched
                        completion_tokens = event.usage.output_tokens
                    elif event.type == "message_stop":
                        reason = reason or "end_turn"
        except Exception as exc:
            raise map_anthropic_error(exc, self.name) from exc
        if reason is None:
            raise ProviderError(f"{self.name} ended the stream before the answer was complete")
        yield Finish(
            finish_reason=STOP_REASONS.get(reason, "stop"),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=answered_model,
            provider=self.name,
            stop_sequence=matched,
        )

    async def _whole(self, kwargs: dict[str, Any], model: str) -> AsyncIterator[Chunk]:
        """One non-streamed call: the answer as one delta (and one per tool call), then
        its finish."""
        try:
            message = await self._client.messages.create(**kwargs)
        except Exception as exc:
            raise map_anthropic_error(exc, self.name) from exc
        text = "".join(block.text for block in message.content if block.type == "text")
        if text:
            yield TextDelta(text, tokens=message.usage.output_tokens or 1)
        uses = [block for block in message.content if block.type == "tool_use"]
        for number, use in enumerate(uses):
            arguments = json.dumps(use.input)
            yield ToolCallDelta(number, arguments=arguments, id=use.id, name=use.name)
        yield Finish(
            finish_reason=STOP_REASONS.get(message.stop_reason or "end_turn", "stop"),
            prompt_tokens=message.usage.input_tokens,
            completion_tokens=message.usage.output_tokens,
            model=message.model or model,
            provider=self.name,
            stop_sequence=message.stop_sequence,
        )

    async def aclose(self) -> None:
        await self._client.close()
