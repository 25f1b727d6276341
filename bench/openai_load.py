"""Closed-loop load on an OpenAI-compatible ``POST {base_url}/chat/completions``: virtual
users, each sending one short stateless request at a time, non-streamed (JSON) or
streamed (``stream: true`` with ``stream_options.include_usage``: time to last byte, and
time to the first chunk carrying content).

The counterpart of `bench.loadgen` (which drives ChatApp's own /api turns) for
`bench/gateway.py`; results are `bench.loadgen.LoadResult`s. `run_load` runs it in a
process of its own and reports the edges of the measured window through `on_mark`, so the
caller can snapshot the servers' CPU there. The process is this module:

    python -m bench.openai_load '{"base_url": "http://127.0.0.1:8100/v1", "model": "m",
                                 "concurrency": 8, "stream": true, "warmup_s": 1,
                                 "duration_s": 3, "max_tokens": 64}'

It prints ``mark start`` and ``mark end`` at the window's edges and ``result {json}`` last.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.loadgen import LoadResult, Turn, process_main, run_process

if TYPE_CHECKING:
    import aiohttp


@dataclass(frozen=True)
class OpenAILoadConfig:
    base_url: str  # up to /v1
    model: str
    concurrency: int  # virtual users
    stream: bool
    warmup_s: float  # requests ending before the window are not counted
    duration_s: float  # the measured window
    max_tokens: int
    request_timeout_s: float = 60
    headers: dict[str, str] = field(default_factory=dict)


def request_body(*, model: str, text: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    """A chat completion request of one user message (streamed ones ask for usage)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def _read_stream(
    resp: aiohttp.ClientResponse,
) -> tuple[float | None, int, int | None, str | None]:
    """(time of the first content, content chunks, completion tokens, error) of an SSE body."""
    first: float | None = None
    chunks = 0
    completion: int | None = None
    done = False
    error: str | None = None
    async for raw in resp.content:
        if not raw.startswith(b"data:"):
            continue
        data = raw[5:].strip()
        if data == b"[DONE]":
            done = True
            continue
        frame = json.loads(data)
        if "error" in frame:
            error = "sse-error"
            continue
        for choice in frame.get("choices") or ():
            if (choice.get("delta") or {}).get("content"):
                chunks += 1
                if first is None:
                    first = time.perf_counter()
        if frame.get("usage"):
            completion = frame["usage"].get("completion_tokens")
    if error is None and not done:
        error = "no-done"
    elif error is None and completion is None:
        error = "no-usage"
    return first, chunks, completion, error


async def one_request(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], stream: bool
) -> Turn:
    start = time.perf_counter()
    try:
        async with session.post(url, json=body) as resp:
            if resp.status != 200:
                await resp.read()
                return Turn(start, time.perf_counter(), None, resp.status, 0, None, "http")
            if stream:
                first, chunks, completion, error = await _read_stream(resp)
                return Turn(start, time.perf_counter(), first, 200, chunks, completion, error)
            reply = json.loads(await resp.read())
            completion = reply["usage"]["completion_tokens"]
            error = None if reply["choices"][0]["message"]["content"] else "empty"
            return Turn(start, time.perf_counter(), None, 200, 0, completion, error)
    except Exception as exc:
        return Turn(start, time.perf_counter(), None, 0, 0, None, type(exc).__name__)


def _self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def closed_loop(
    config: OpenAILoadConfig, on_mark: Callable[[str], None] = lambda mark: None
) -> LoadResult:
    """Every user sends requests back to back until the window ends; `on_mark("start")` /
    `on_mark("end")` at the window's edges."""
    import aiohttp

    url = f"{config.base_url}/chat/completions"
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)
    turns: list[Turn] = []
    window_start = time.perf_counter() + config.warmup_s
    window_end = window_start + config.duration_s
    usage: dict[str, float] = {}
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=config.headers
    ) as session:

        async def marks() -> None:
            await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
            usage["start"] = _self_cpu_s()
            on_mark("start")
            await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
            usage["end"] = _self_cpu_s()
            on_mark("end")

        async def user(i: int) -> None:
            n = 0
            while time.perf_counter() < window_end:
                n += 1
                body = request_body(
                    model=config.model,
                    text=f"user {i} request {n}: tell me something about benchmarks",
                    max_tokens=config.max_tokens,
                    stream=config.stream,
                )
                turns.append(await one_request(session, url, body, config.stream))

        await asyncio.gather(marks(), *(user(i) for i in range(config.concurrency)))

    inside = [t for t in turns if window_start <= t.end <= window_end]
    ok = [t for t in inside if t.status == 200 and t.error is None]
    errors: dict[str, int] = {}
    for t in inside:
        if t.status != 200 or t.error is not None:
            key = f"{t.status}:{t.error}"
            errors[key] = errors.get(key, 0) + 1
    return LoadResult(
        completed=len(ok),
        window_s=window_end - window_start,
        latency_s=[t.end - t.start for t in ok],
        ttft_s=[t.first_token - t.start for t in ok if t.first_token is not None],
        token_events=[t.token_events for t in ok],
        completion_tokens=[t.completion_tokens for t in ok if t.completion_tokens is not None],
        errors=errors,
        client_cpu_s=usage.get("end", 0.0) - usage.get("start", 0.0),
        late=len([t for t in turns if t.end > window_end]),
    )


def run_load(config: OpenAILoadConfig, on_mark: Callable[[str], None]) -> LoadResult:
    """`closed_loop` in a process of its own (see `bench.loadgen.run_process`)."""
    return run_process("bench.openai_load", config, on_mark)


def main(argv: list[str]) -> int:
    return process_main(
        argv,
        usage=f"usage: python -m bench.openai_load CONFIG_JSON\n\n{__doc__}",
        config_type=OpenAILoadConfig,
        loop=closed_loop,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
