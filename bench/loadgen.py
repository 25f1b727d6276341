"""Closed-loop chat load: virtual users, each owning one conversation and posting one turn at
a time to ``POST /api/conversations/{id}/messages``, as JSON (``stream: false``) or as
server-sent events (``stream: true``: time to last byte and to the first ``token`` event).

`run_load` runs it in a process of its own (so its CPU is apart from the caller's and the
server's) and reports the edges of the measured window through `on_mark`, so the caller
can snapshot the server's CPU there. The process is this module:

    python -m bench.loadgen '{"base_url": "http://127.0.0.1:8000", "concurrency": 16,
                             "stream": true, "warmup_s": 1, "duration_s": 3,
                             "reply_tokens": 64}'

It prints ``mark start`` and ``mark end`` at the window's edges and ``result {json}`` last.
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from bench.procs import ROOT, die_with_parent

C = TypeVar("C")

if TYPE_CHECKING:
    import aiohttp


@dataclass(frozen=True)
class LoadConfig:
    base_url: str
    concurrency: int  # virtual users, one conversation each
    stream: bool
    warmup_s: float  # turns ending before the window are not counted
    duration_s: float  # the measured window
    reply_tokens: int  # max_tokens of each turn
    request_timeout_s: float = 60
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadResult:
    """The turns that ended inside the window; latencies of the successful ones."""

    completed: int
    window_s: float
    latency_s: list[float]  # time to last byte
    ttft_s: list[float]  # time to the first token event (streamed turns)
    token_events: list[int]  # SSE token events per turn
    completion_tokens: list[int]
    errors: dict[str, int]  # "status:kind" -> count
    client_cpu_s: float  # this load generator's CPU time inside the window
    late: int  # turns still running at the window's end


class LoadGeneratorError(RuntimeError):
    pass


@dataclass
class Turn:
    start: float
    end: float
    first_token: float | None
    status: int
    token_events: int
    completion_tokens: int | None
    error: str | None = None


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN when there are no values."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


async def one_turn(
    session: aiohttp.ClientSession, url: str, payload: dict[str, Any], stream: bool
) -> Turn:
    start = time.perf_counter()
    first: float | None = None
    token_events = 0
    completion: int | None = None
    error: str | None = None
    try:
        async with session.post(url, json=payload) as resp:
            if resp.status != 200:
                await resp.read()
                return Turn(start, time.perf_counter(), None, resp.status, 0, None, "http")
            if stream:
                event = b""
                async for raw in resp.content:
                    line = raw.rstrip(b"\r\n")
                    if line.startswith(b"event:"):
                        event = line[6:].strip()
                    elif line.startswith(b"data:"):
                        if event == b"token":
                            token_events += 1
                            if first is None:
                                first = time.perf_counter()
                        elif event == b"done":
                            completion = json.loads(line[5:])["usage"]["completion_tokens"]
                        elif event == b"error":
                            error = "sse-error"
                    elif not line:
                        event = b""
                if completion is None and error is None:
                    error = "no-done-event"
            else:
                body = json.loads(await resp.read())
                completion = body["message"]["completion_tokens"]
            return Turn(start, time.perf_counter(), first, 200, token_events, completion, error)
    except Exception as exc:
        return Turn(start, time.perf_counter(), None, 0, 0, None, type(exc).__name__)


def _self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def closed_loop(
    config: LoadConfig, on_mark: Callable[[str], None] = lambda mark: None
) -> LoadResult:
    """Create one conversation per user, then let every user post turns back to back until
    the window ends; `on_mark("start")` / `on_mark("end")` at the window's edges."""
    import aiohttp

    base = config.base_url
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=config.headers
    ) as session:

        async def create() -> str:
            async with session.post(f"{base}/api/conversations", json={"title": "bench"}) as r:
                if r.status != 201:
                    raise RuntimeError(f"create conversation: HTTP {r.status}: {await r.text()}")
                return str((await r.json())["id"])

        conversations = await asyncio.gather(*(create() for _ in range(config.concurrency)))
        turns: list[Turn] = []
        now = time.perf_counter()
        window_start = now + config.warmup_s
        window_end = window_start + config.duration_s
        usage: dict[str, float] = {}

        async def marks() -> None:
            await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
            usage["start"] = _self_cpu_s()
            on_mark("start")
            await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
            usage["end"] = _self_cpu_s()
            on_mark("end")

        async def user(i: int, cid: str) -> None:
            url = f"{base}/api/conversations/{cid}/messages"
            n = 0
            while time.perf_counter() < window_end:
                n += 1
                payload = {
                    "content": f"user {i} turn {n}: tell me something about benchmarks",
                    "stream": config.stream,
                    "max_tokens": config.reply_tokens,
                }
                turns.append(await one_turn(session, url, payload, config.stream))

        await asyncio.gather(marks(), *(user(i, c) for i, c in enumerate(conversations)))

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


class _Window(Protocol):
    @property
    def warmup_s(self) -> float: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def request_timeout_s(self) -> float: ...


def run_process(module: str, config: _Window, on_mark: Callable[[str], None]) -> LoadResult:
    """Run load generator `module` (``python -m module CONFIG_JSON``, see `process_main`)
    in its own process, calling `on_mark` here when it reaches the window's edges. A hung
    server does not hang the caller: the process gets a hard deadline. Raises
    LoadGeneratorError when it ends without a result."""
    cmd = [sys.executable, "-m", module, json.dumps(asdict(config))]  # type: ignore[call-overload]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=die_with_parent
    )
    limit = config.warmup_s + config.duration_s + config.request_timeout_s + 60
    watchdog = threading.Timer(limit, proc.kill)
    watchdog.start()
    result: LoadResult | None = None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if line.startswith("mark "):
                on_mark(line.split()[1])
            elif line.startswith("result "):
                result = LoadResult(**json.loads(line[len("result ") :]))
        proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if result is None:
        raise LoadGeneratorError(f"load generator failed (rc {proc.returncode})")
    return result


def process_main(
    argv: list[str],
    *,
    usage: str,
    config_type: Callable[..., C],
    loop: Callable[[C, Callable[[str], None]], Coroutine[Any, Any, LoadResult]],
) -> int:
    """The load-generator process: config JSON in, marks and the result out on stdout."""
    if len(argv) != 1:
        print(usage, file=sys.stderr)
        return 2
    config = config_type(**json.loads(argv[0]))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(loop(config, lambda mark: print(f"mark {mark}", flush=True)))
    print("result " + json.dumps(asdict(result)), flush=True)
    return 0


def run_load(config: LoadConfig, on_mark: Callable[[str], None]) -> LoadResult:
    """`closed_loop` in a process of its own (see `run_process`)."""
    return run_process("bench.loadgen", config, on_mark)


def main(argv: list[str]) -> int:
    return process_main(
        argv,
        usage=f"usage: python -m bench.loadgen CONFIG_JSON\n\n{__doc__}",
        config_type=LoadConfig,
        loop=closed_loop,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
