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

This module holds the measurement loop and the report; the pieces are modules of the
`bench` package: `bench.procs` (supervisor, free ports, /proc CPU accounting),
`bench.loadgen` (the load generator), `bench.systems` (baseline, ChatApp, Serve flag
configurations, PostgreSQL) and `bench.baseline` (the passthrough app).

    .venv/bin/python bench/chat_turn.py                 # ~3 minutes
    .venv/bin/python bench/chat_turn.py --quick         # smoke run, ~1 minute
    .venv/bin/python bench/chat_turn.py --flags         # + Ray Serve flag rows, ~6 minutes
    .venv/bin/python -m bench.chat_turn --quick         # the same, as a module
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as `python bench/chat_turn.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import LoadConfig, LoadGeneratorError, LoadResult, percentile, run_load
from bench.procs import (
    NCPU,
    ROOT,
    CpuSnapshot,
    CpuUsage,
    Server,
    Supervisor,
    cpu_delta,
    cpu_snapshot,
)
from bench.systems import (
    PG_DEFAULT,
    ChatAppOptions,
    flag_configs,
    settings_fields,
    start_baseline,
    start_chatapp,
    temporary_pg_database,
)

# --------------------------------------------------------------------------- measurement


@dataclass
class Row:
    system: str
    endpoint: str
    mode: str
    users: int
    result: LoadResult | None
    server_cpu: dict[str, float]
    machine_cores: float
    note: str = ""


def measure(
    server: Server, endpoint: str, stream: bool, users: int, args: argparse.Namespace
) -> Row:
    """One row: the load generator against one endpoint of `server`, with the server's CPU
    snapshotted at the edges of the measured window."""
    config = LoadConfig(
        base_url=server.urls[endpoint],
        concurrency=users,
        stream=stream,
        warmup_s=args.warmup,
        duration_s=args.duration,
        reply_tokens=args.reply_tokens,
        headers=server.headers,
    )
    snaps: dict[str, CpuSnapshot] = {}

    def mark(edge: str) -> None:
        snaps[edge] = cpu_snapshot(server.token)

    result: LoadResult | None = None
    note = ""
    try:
        result = run_load(config, mark)
    except LoadGeneratorError as exc:
        note = str(exc)
    usage = CpuUsage({}, 0.0)
    if "start" in snaps and "end" in snaps:
        usage = cpu_delta(snaps["start"], snaps["end"])
    mode = "stream" if stream else "json"
    row = Row(
        server.name, endpoint, mode, users, result, usage.by_process, usage.machine_cores, note
    )
    print("  " + _row_line(row), flush=True)
    return row


def measure_server(server: Server, args: argparse.Namespace) -> list[Row]:
    """Every endpoint of `server` at every concurrency, non-streamed then streamed."""
    return [
        measure(server, endpoint, stream, users, args)
        for endpoint in list(server.urls)
        for users in args.concurrency
        for stream in (False, True)
    ]


def measure_all(
    supervisor: Supervisor, tmp: Path, chatapp: ChatAppOptions, args: argparse.Namespace
) -> list[Row]:
    """The baseline, then each ChatApp configuration, each alone on the machine."""
    print("baseline: FastAPI passthrough on uvicorn", flush=True)
    baseline = start_baseline(
        supervisor, tmp, tokens_per_s=args.tokens_per_s, reply_tokens=args.reply_tokens
    )
    rows = measure_server(baseline, args)
    supervisor.stop(baseline)
    for name, flags in flag_configs(with_flags=args.flags):
        print(f"{name}: starting ({' '.join(f'{k}={v}' for k, v in flags.items())})")
        try:
            server = start_chatapp(supervisor, tmp, name, flags, chatapp)
        except RuntimeError as exc:
            print(f"  {exc}", flush=True)
            rows.append(Row(name, "-", "-", 0, None, {}, math.nan, "did not start"))
            continue
        try:
            rows += measure_server(server, args)
        finally:
            supervisor.stop(server)
    return rows


# --------------------------------------------------------------------------- report


def _stats(row: Row) -> dict[str, float]:
    """A row's figures; NaN where it has none."""
    r = row.result
    lat, ttft = (r.latency_s, r.ttft_s) if r is not None else ([], [])
    events, tokens = (r.token_events, r.completion_tokens) if r is not None else ([], [])
    client = r.client_cpu_s / r.window_s if r is not None else math.nan
    return {
        "rps": r.completed / r.window_s if r is not None else math.nan,
        "p50": percentile(lat, 50) * 1000,
        "p99": percentile(lat, 99) * 1000,
        "ttft50": percentile(ttft, 50) * 1000,
        "ttft99": percentile(ttft, 99) * 1000,
        "events": sum(events) / len(events) if events else math.nan,
        "tokens": sum(tokens) / len(tokens) if tokens else math.nan,
        "errors": sum(r.errors.values()) if r is not None else math.nan,
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


def _row_line(row: Row) -> str:
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
        print(_row_line(row))
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
    report_targets(rows)
    print()
    print("Server CPU by process (cores, mean over the measured window)")
    for row in rows:
        top = sorted(row.server_cpu.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{k} {v:.2f}" for k, v in top if v >= 0.01)
        print(f"  {row.system} {row.endpoint} {row.mode} {row.users}: {shown or '-'}")
    errs = [(r, r.result.errors) for r in rows if r.result and r.result.errors]
    if errs:
        print()
        print("Errors (status:kind count)")
        for row, e in errs:
            print(f"  {row.system} {row.endpoint} {row.mode} {row.users}: {e}")


def report_targets(rows: list[Row]) -> None:
    """Issue 11's chat-turn rows: the issue's "before", this run's figure for each ChatApp
    system, the target, and met or missed by how much (the 10,000-user soak is
    bench/users.py's, the /v1 rows bench/gateway.py's)."""
    stats = {(r.system, r.mode, r.users): _stats(r) for r in rows if r.result is not None}
    systems = list(dict.fromkeys(r.system for r in rows if r.system != "baseline"))
    print()
    print("Issue 11 targets, chat turn (before: the issue's figures; the rest: this run)")
    print(f"{'figure':<46}{'before':<13}{'target':<17}" + "".join(f"{s:<30}" for s in systems))

    def pair(system: str, mode: str, users: int) -> tuple[dict[str, float], dict[str, float]]:
        nan = dict.fromkeys(("rps", "p50", "p99", "ttft50", "server_cpu"), math.nan)
        return stats.get((system, mode, users), nan), stats.get(("baseline", mode, users), nan)

    def cpu(system: str) -> str:
        s, _ = pair(system, "stream", 32)
        ms = s["server_cpu"] * 1000 / s["rps"] if s["rps"] else math.nan
        return _verdict(f"{ms:.1f} ms", ms - 20, "ms")

    def rps(system: str) -> str:
        (sj, bj), (ss, bs) = pair(system, "json", 32), pair(system, "stream", 32)
        worst = min(sj["rps"] / bj["rps"], ss["rps"] / bs["rps"])
        text = f"{sj['rps'] / bj['rps']:.2f}x / {ss['rps'] / bs['rps']:.2f}x"
        return _verdict(text, 0.75 - worst, "x")

    def latency(system: str) -> str:
        s, b = pair(system, "stream", 32)
        p50, p99 = s["p50"] / b["p50"], s["p99"] / b["p99"]
        return _verdict(f"{p50:.2f}x / {p99:.2f}x", max(p50 - 1.15, p99 - 1.5), "x")

    def ttft(system: str) -> str:
        s, b = pair(system, "stream", 1)
        over = s["ttft50"] - b["ttft50"]
        return _verdict(f"{over:+.1f} ms", over - 5, "ms")

    table = (
        ("server CPU per turn (streamed, 32 users)", "44-52 ms", "<= 20 ms", cpu),
        ("req/s vs passthrough, 32 users (json/stream)", "0.34-0.37x", ">= 0.75x", rps),
        ("p50 / p99 vs passthrough, 32 users (stream)", "2.7x / 3.9x", "<= 1.15x/1.5x", latency),
        ("TTFT overhead vs passthrough, 1 user", "+31 ms", "<= +5 ms", ttft),
    )
    for figure, before, goal, measure in table:
        print(f"{figure:<46}{before:<13}{goal:<17}" + "".join(f"{measure(s):<30}" for s in systems))


def _verdict(figure: str, excess: float, unit: str) -> str:
    """`figure`, met or missed by `excess` (positive: over the target), or not measured."""
    if math.isnan(excess):
        return "not measured"
    return f"{figure} " + ("met" if excess <= 0 else f"missed by {excess:.2f}{unit}")


# --------------------------------------------------------------------------- main


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per row")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each row")
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        default=None,
        help="virtual users (default 1,32: the targets' rows; --quick 16); a comma list",
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
        const=PG_DEFAULT,
        default=None,
        metavar="ADMIN_URL",
        help="ChatApp on a temporary PostgreSQL database, created (and dropped) through "
        f"ADMIN_URL (default {PG_DEFAULT})",
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
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    if args.concurrency is None:
        args.concurrency = [16] if args.quick else [1, 32]
    args.src = args.src.resolve()
    return args


def main() -> int:
    args = parse_args()
    fields = settings_fields(args.src)
    tmp = Path(tempfile.mkdtemp(prefix="ctb-", dir="/tmp"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            if args.postgres:
                args.database_url = stack.enter_context(temporary_pg_database(args.postgres))
            chatapp = ChatAppOptions(
                src=args.src,
                settings_fields=fields,
                tokens_per_s=args.tokens_per_s,
                reply_tokens=args.reply_tokens,
                database_url=args.database_url,
                overrides=args.overrides,
                start_timeout_s=args.start_timeout,
            )
            supervisor = stack.enter_context(Supervisor())
            rows = measure_all(supervisor, tmp, chatapp, args)
            report(rows, args)
            kept = f"; logs in {tmp}" if args.keep else ""
            print(f"\ntotal {time.monotonic() - t_start:.0f} s{kept}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
