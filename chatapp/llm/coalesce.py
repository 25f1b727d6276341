"""Batch text deltas before they cross a process boundary.

A chat turn must cost a bounded number of Ray calls whatever its length, so tokens
are merged by time window and size instead of travelling one object per token. The
pieces of a streamed tool call (`ToolCallDelta`) are merged the same way: consecutive
pieces of one call become one piece.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from chatapp.llm.base import TextDelta, ToolCallDelta, close_stream

T = TypeVar("T")
_DONE = object()


Delta = TextDelta | ToolCallDelta


def merged(pending: list[Delta]) -> list[Delta]:
    """Consecutive text deltas as one, consecutive pieces of one tool call as one (a
    piece carrying an id starts a call)."""
    out: list[Delta] = []
    run: list[Delta] = []

    def flush() -> None:
        head = run[0]
        if len(run) == 1:
            out.append(head)
        elif isinstance(head, TextDelta):
            texts = [d for d in run if isinstance(d, TextDelta)]
            out.append(TextDelta("".join(d.text for d in texts), sum(d.tokens for d in texts)))
        else:
            calls = [d for d in run if isinstance(d, ToolCallDelta)]
            arguments = "".join(d.arguments for d in calls)
            out.append(ToolCallDelta(head.index, arguments, head.id, head.name))
        run.clear()

    for d in pending:
        if run:
            last = run[-1]
            same = (isinstance(d, TextDelta) and isinstance(last, TextDelta)) or (
                isinstance(d, ToolCallDelta)
                and isinstance(last, ToolCallDelta)
                and d.index == last.index
                and d.id is None
            )
            if not same:
                flush()
        run.append(d)
    if run:
        flush()
    return out


def _size(d: Delta) -> int:
    return len(d.text) if isinstance(d, TextDelta) else len(d.arguments)


async def coalesce(
    source: AsyncIterator[T], *, window_s: float, max_chars: int
) -> AsyncIterator[T | Delta]:
    """Merge consecutive deltas arriving within `window_s` (or until `max_chars`).

    The first delta of a stream is sent at once (time to first token matters most);
    other chunk types pass through unchanged and flush what is pending first.
    """
    if window_s <= 0:
        async for item in source:
            yield item
        return

    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put(item)
        except BaseException as exc:  # delivered to the consumer below
            await queue.put(exc)
        finally:
            await queue.put(_DONE)

    task = asyncio.create_task(pump())
    loop = asyncio.get_running_loop()
    pending: list[Delta] = []
    pending_chars = 0
    deadline: float | None = None
    first = True
    try:
        while True:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                item = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                for delta in merged(pending):
                    yield delta
                pending, pending_chars, deadline = [], 0, None
                continue
            if isinstance(item, TextDelta | ToolCallDelta):
                if first:
                    first = False
                    yield item
                    continue
                pending.append(item)
                pending_chars += _size(item)
                if deadline is None:
                    deadline = loop.time() + window_s
                if pending_chars >= max_chars:
                    for delta in merged(pending):
                        yield delta
                    pending, pending_chars, deadline = [], 0, None
                continue
            if pending:
                for delta in merged(pending):
                    yield delta
                pending, pending_chars, deadline = [], 0, None
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(Exception):
            await close_stream(source)
