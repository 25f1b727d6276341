"""Batch text deltas before they cross a process boundary.

A chat turn must cost a bounded number of Ray calls whatever its length, so tokens
are merged by time window and size instead of travelling one object per token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from chatapp.llm.base import TextDelta

T = TypeVar("T")
_DONE = object()


async def coalesce(
    source: AsyncIterator[T], *, window_s: float, max_chars: int
) -> AsyncIterator[T | TextDelta]:
    """Merge consecutive `TextDelta`s arriving within `window_s` (or until `max_chars`).

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
    pending: list[str] = []
    pending_tokens = 0
    deadline: float | None = None
    first = True
    try:
        while True:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                item = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                yield TextDelta("".join(pending), pending_tokens)
                pending, pending_tokens, deadline = [], 0, None
                continue
            if isinstance(item, TextDelta):
                if first:
                    first = False
                    yield item
                    continue
                pending.append(item.text)
                pending_tokens += item.tokens
                if deadline is None:
                    deadline = loop.time() + window_s
                if sum(map(len, pending)) >= max_chars:
                    yield TextDelta("".join(pending), pending_tokens)
                    pending, pending_tokens, deadline = [], 0, None
                continue
            if pending:
                yield TextDelta("".join(pending), pending_tokens)
                pending, pending_tokens, deadline = [], 0, None
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
