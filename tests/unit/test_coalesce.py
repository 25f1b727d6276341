"""Tokens cross process boundaries in batches, not one object per token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatapp.llm.base import Finish, TextDelta
from chatapp.llm.coalesce import coalesce


async def tokens(n: int, delay: float) -> AsyncIterator[TextDelta | Finish]:
    for i in range(n):
        await asyncio.sleep(delay)
        yield TextDelta(f"t{i} ")
    yield Finish("stop", 3, n)


async def test_many_tokens_become_few_batches_with_the_same_text() -> None:
    out = [c async for c in coalesce(tokens(200, 0.001), window_s=0.05, max_chars=10_000)]
    deltas = [c for c in out if isinstance(c, TextDelta)]
    assert "".join(d.text for d in deltas) == "".join(f"t{i} " for i in range(200))
    assert sum(d.tokens for d in deltas) == 200
    assert len(deltas) < 40  # ~0.2 s of tokens in 50 ms windows, not 200 objects
    assert isinstance(out[-1], Finish)


async def test_first_token_is_not_delayed() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    stream = coalesce(tokens(5, 0.0), window_s=1.0, max_chars=10_000)
    first = await anext(stream)
    assert first == TextDelta("t0 ")
    assert loop.time() - start < 0.5
    rest = [c async for c in stream]
    assert "".join(c.text for c in rest if isinstance(c, TextDelta)) == "t1 t2 t3 t4 "


async def test_size_bound_flushes_early() -> None:
    out = [c async for c in coalesce(tokens(50, 0.0), window_s=10.0, max_chars=12)]
    deltas = [c for c in out if isinstance(c, TextDelta)]
    assert all(len(d.text) <= 12 + 4 for d in deltas)


async def test_source_errors_reach_the_consumer() -> None:
    async def broken() -> AsyncIterator[TextDelta]:
        yield TextDelta("a")
        raise RuntimeError("engine fault")

    with pytest.raises(RuntimeError, match="engine fault"):
        async for _ in coalesce(broken(), window_s=0.01, max_chars=100):
            pass
