"""Open-loop chat load: many users, each with its own access token and conversation, sending
streamed turns (``POST /api/conversations/{id}/messages``, server-sent events) at Poisson
arrival times that do not wait for the server.

Each user sends one turn every `interval_s` seconds on average. The users' Poisson
processes together are one Poisson process of rate ``users / interval_s`` whose arrivals
fall on a user drawn uniformly, so one scheduler loop generates them all. A user's own
turns never overlap (ChatApp answers 409 to a second turn in a busy conversation, and a
person waits for the reply): an arrival for a user whose turn is still running waits for it
(`deferred`), also after the window's end; arrivals still waiting when the run gives up
draining (a request timeout after the window) are `unsent`. Latencies run from the
request's send; the window counts the turns that arrived in it.

A run is one or more processes of this module, each with a slice of the users and the same
wall-clock start, so the load generator's own CPU can be spread and measured (`OpenLoopRun`
starts them; the caller snapshots the server's CPU at the window's edges itself):

    python -m bench.openloop CONFIG.json RESULT.json

CONFIG holds an `OpenLoopConfig`; RESULT receives an `OpenLoopResult`.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.loadgen import LoadGeneratorError
from bench.procs import ROOT, die_with_parent

if TYPE_CHECKING:
    import aiohttp


@dataclass(frozen=True)
class OpenLoopConfig:
    base_url: str
    users: list[tuple[str, str]]  # (access token, conversation id) per user
    interval_s: float  # mean seconds between one user's turns
    start_at: float  # wall clock (time.time()) of the first arrival
    warmup_s: float  # arrivals before the window are sent but not counted
    duration_s: float  # the measured window
    reply_tokens: int  # max_tokens of each turn
    request_timeout_s: float = 60.0
    seed: int = 0


@dataclass
class OpenLoopResult:
    """Turns that arrived inside the window, but `completed`: the successful turns that
    ended inside it, whenever they arrived (for rates and CPU per turn)."""

    arrivals: int
    completed: int
    window_s: float
    ttft_s: list[float] = field(default_factory=list)  # send to first `token` event
    latency_s: list[float] = field(default_factory=list)  # send to the end of the stream
    errors: dict[str, int] = field(default_factory=dict)  # "HTTP 503:<code>", "sse:<code>"
    deferred: int = 0  # arrivals that waited for the same user's previous turn
    unsent: int = 0  # arrivals never sent (still waiting when draining gave up)
    client_cpu_s: float = 0.0  # this load generator's CPU time inside the window
    processes: int = 1


@dataclass(frozen=True, slots=True)
class TurnRecord:
    arrived: float
    sent: float
    ended: float
    first_token: float | None
    error: str | None  # None: a `done` event arrived


async def streamed_turn(
    session: aiohttp.ClientSession, url: str, token: str, content: str, max_tokens: int
) -> tuple[float, float | None, str | None]:
    """One streamed turn: (end time, first `token` event time, error key or None)."""
    payload = {"content": content, "stream": True, "max_tokens": max_tokens}
    headers = {"Authorization": f"Bearer {token}"}
    first: float | None = None
    try:
        async with session.post(url, json=payload, headers=headers) as resp:
            if resp.status != 200:
                code = _error_code(await resp.read())
                return time.perf_counter(), None, f"HTTP {resp.status}:{code}"
            event, error = b"", "no done event"
            async for raw in resp.content:
                line = raw.rstrip(b"\r\n")
                if line.startswith(b"event:"):
                    event = line[6:].strip()
                elif line.startswith(b"data:"):
                    if event == b"token" and first is None:
                        first = time.perf_counter()
                    elif event == b"done":
                        error = ""
                    elif event == b"error":
                        error = "sse:" + _error_code(line[5:])
                elif not line:
                    event = b""
            return time.perf_counter(), first, error or None
    except Exception as exc:
        return time.perf_counter(), first, type(exc).__name__


def _error_code(data: bytes) -> str:
    """The code of an OpenAI error envelope (an SSE `error` event's data, an error body)."""
    try:
        body = json.loads(data)["error"]
        return str(body.get("code") or body.get("type") or "?")
    except (ValueError, KeyError, TypeError, AttributeError):
        return "?"


async def open_loop(config: OpenLoopConfig) -> OpenLoopResult:
    import aiohttp

    rng = random.Random(config.seed)
    n = len(config.users)
    rate = n / config.interval_s
    t0 = time.perf_counter() + (config.start_at - time.time())
    w0 = t0 + config.warmup_s
    w1 = w0 + config.duration_s
    records: list[TurnRecord] = []
    waiting: dict[int, deque[float]] = {}  # user -> arrival times behind a running turn
    busy: set[int] = set()
    inflight: dict[int, tuple[float, float]] = {}  # user -> (arrived, sent) of a running turn
    tasks: set[asyncio.Task[None]] = set()
    cpu: dict[str, float] = {}
    deferred = 0
    turns_sent = 0

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def user_turns(u: int, arrived: float) -> None:
            nonlocal turns_sent
            token, conversation = config.users[u]
            url = f"{config.base_url}/api/conversations/{conversation}/messages"
            try:
                while True:
                    turns_sent += 1
                    sent = time.perf_counter()
                    inflight[u] = (arrived, sent)
                    content = f"user {u} turn {turns_sent}: tell me something about benchmarks"
                    ended, first, error = await streamed_turn(
                        session, url, token, content, config.reply_tokens
                    )
                    del inflight[u]
                    records.append(TurnRecord(arrived, sent, ended, first, error))
                    queue = waiting.get(u)
                    if not queue:
                        return
                    arrived = queue.popleft()
            finally:
                busy.discard(u)

        async def marks() -> None:
            await asyncio.sleep(max(0.0, w0 - time.perf_counter()))
            cpu["start"] = time.process_time()
            await asyncio.sleep(max(0.0, w1 - time.perf_counter()))
            cpu["end"] = time.process_time()

        marker = asyncio.create_task(marks())
        t = t0
        while True:
            t += rng.expovariate(rate)
            if t >= w1:
                break
            delay = t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            u = rng.randrange(n)
            if u in busy:
                waiting.setdefault(u, deque()).append(t)
                deferred += t >= w0
                continue
            busy.add(u)  # now: the task may first run after more arrivals
            task = asyncio.create_task(user_turns(u, t))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await marker
        if tasks:
            await asyncio.wait(set(tasks), timeout=config.request_timeout_s + 5)
        for task in list(tasks):
            task.cancel()
        for arrived, sent in inflight.values():  # cancelled: a turn that never ended
            records.append(TurnRecord(arrived, sent, time.perf_counter(), None, "unfinished"))

    inside = [r for r in records if w0 <= r.arrived < w1]
    ok = [r for r in inside if r.error is None]
    errors: dict[str, int] = {}
    for r in inside:
        if r.error is not None:
            errors[r.error] = errors.get(r.error, 0) + 1
    unsent = sum(1 for q in waiting.values() for a in q if w0 <= a < w1)
    return OpenLoopResult(
        arrivals=len(inside) + unsent,
        completed=sum(1 for r in records if r.error is None and w0 <= r.ended <= w1),
        window_s=config.duration_s,
        ttft_s=[r.first_token - r.sent for r in ok if r.first_token is not None],
        latency_s=[r.ended - r.sent for r in ok],
        errors=errors,
        deferred=deferred,
        unsent=unsent,
        client_cpu_s=cpu.get("end", 0.0) - cpu.get("start", 0.0),
    )


def merge(results: list[OpenLoopResult]) -> OpenLoopResult:
    """One result from the load generator processes of one run."""
    out = OpenLoopResult(0, 0, results[0].window_s if results else 0.0, processes=0)
    for r in results:
        out.arrivals += r.arrivals
        out.completed += r.completed
        out.ttft_s += r.ttft_s
        out.latency_s += r.latency_s
        for key, count in r.errors.items():
            out.errors[key] = out.errors.get(key, 0) + count
        out.deferred += r.deferred
        out.unsent += r.unsent
        out.client_cpu_s += r.client_cpu_s
        out.processes += r.processes
    return out


class OpenLoopRun:
    """Load generator processes started now, one per config (each a slice of the users,
    all with the same `start_at`); `result` waits for them and merges what they report."""

    def __init__(self, configs: list[OpenLoopConfig], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._deadline = max(
            c.start_at + c.warmup_s + c.duration_s + c.request_timeout_s + 60 for c in configs
        )
        self._runs: list[tuple[subprocess.Popen[bytes], Path]] = []
        for i, config in enumerate(configs):
            cfg, res = folder / f"load-{i}.json", folder / f"result-{i}.json"
            cfg.write_text(json.dumps(asdict(config)))
            res.unlink(missing_ok=True)
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.openloop", str(cfg), str(res)],
                cwd=ROOT,
                preexec_fn=die_with_parent,
            )
            self._runs.append((proc, res))

    def result(self) -> OpenLoopResult:
        """The merged result; LoadGeneratorError when a process ends without one (every
        process gets killed past its hard deadline, so a hung server hangs nothing)."""
        results = []
        for proc, res in self._runs:
            try:
                proc.wait(max(1.0, self._deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if not res.is_file():
                raise LoadGeneratorError(f"load generator failed (rc {proc.returncode})")
            results.append(OpenLoopResult(**json.loads(res.read_text())))
        return merge(results)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: python -m bench.openloop CONFIG.json RESULT.json\n\n{__doc__}")
        return 2
    raw: dict[str, Any] = json.loads(Path(argv[0]).read_text())
    raw["users"] = [tuple(u) for u in raw["users"]]
    config = OpenLoopConfig(**raw)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(open_loop(config))
    Path(argv[1]).write_text(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
