"""A streamed answer as Anthropic's server-sent events, from ChatApp's chunks:

    message_start, then per content block (text, or one per tool call)
    content_block_start, content_block_delta (text_delta | input_json_delta)...,
    content_block_stop, with one ping after the first block's start; then
    message_delta (stop reason and usage) and message_stop.

Blocks open as the answer needs them: text first, then a `tool_use` block per call (a
call's pieces arrive together: the router coalesces them per call). `AnswerEvents` only
builds the events; the ingress writes them as SSE."""

from __future__ import annotations

from typing import Any

from chatapp.anthropic_api.convert import stop_reason, usage
from chatapp.llm.base import Chunk, TextDelta, ToolCallDelta

Event = tuple[str, dict[str, Any]]  # (event name, data)


class AnswerEvents:
    """The events of one answer: `start`, then `feed` with each chunk in order (a failure
    after the first chunk is the ingress's `error` event)."""

    def __init__(
        self, ident: str, model: str, *, sources: list[dict[str, Any]] | None = None
    ) -> None:
        self._ident = ident
        self._model = model
        self._sources = sources or []
        self._blocks = 0  # blocks opened so far
        self._open: int | None = None  # the open block's index
        self._text: int | None = None  # the open block is text: its index
        self._calls: dict[int, int] = {}  # tool call number -> its block's index
        self._pinged = False

    def start(self) -> list[Event]:
        message: dict[str, Any] = {
            "id": self._ident,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self._model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def feed(self, chunk: Chunk) -> list[Event]:
        if isinstance(chunk, TextDelta):
            if not chunk.text:
                return []
            events = [] if self._text is not None else self._begin({"type": "text", "text": ""})
            if self._text is None:
                self._text = self._open
            return [*events, self._delta({"type": "text_delta", "text": chunk.text})]
        if isinstance(chunk, ToolCallDelta):
            return self._tool(chunk)
        events = self._close()
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(chunk), "stop_sequence": chunk.stop_sequence},
            "usage": usage(chunk).model_dump(),
        }
        if self._sources:
            delta["sources"] = self._sources
        return [*events, ("message_delta", delta), ("message_stop", {"type": "message_stop"})]

    # -- blocks ---------------------------------------------------------------------

    def _tool(self, chunk: ToolCallDelta) -> list[Event]:
        events: list[Event] = []
        block = self._calls.get(chunk.index)
        if block is None:
            events = self._begin(
                {"type": "tool_use", "id": chunk.id or "", "name": chunk.name or "", "input": {}}
            )
            block = self._calls[chunk.index] = self._blocks - 1
        if chunk.arguments:
            events.append(
                self._delta({"type": "input_json_delta", "partial_json": chunk.arguments}, block)
            )
        return events

    def _begin(self, block: dict[str, Any]) -> list[Event]:
        events = self._close()
        index = self._blocks
        self._blocks += 1
        self._open = index
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block},
            )
        )
        if not self._pinged:
            self._pinged = True
            events.append(("ping", {"type": "ping"}))
        return events

    def _delta(self, delta: dict[str, Any], index: int | None = None) -> Event:
        at = self._open if index is None else index
        return "content_block_delta", {"type": "content_block_delta", "index": at, "delta": delta}

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        index, self._open, self._text = self._open, None, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]
