"""The 10,000-user soak: many users, each with an account, an access token and a conversation,
sending streamed turns to one ChatApp at Poisson arrival times (open loop), on loopback.

One ChatApp (``chatapp run`` on its own local Ray, via `bench.systems`) runs on a temporary
PostgreSQL database (``--postgres``: the server at 127.0.0.1:5432; dropped at the end) with
Redis on (``--redis-url``; keys under a prefix of this run, deleted at the end), the
simulated engine (64 tokens at 200 tokens/s: its own first token comes after 5 ms and the
whole reply after 320 ms, so the engine is not the limit), no per-user limits, no response
cache, no retrieval, and access tokens that outlive the run. Before any timing:

- an account per user, made in bulk (``--accounts``). ``api``: ``POST /api/auth/register``
  then ``POST /api/auth/token`` for each, 8 at a time (the registration and login limits
  raised by settings overrides, as `bench.systems` does for all of them). That is two argon2
  hashes per account (~160 ms of CPU each on a quiet core) in the ingress replica: ~3
  accounts/s on a quiet 2-core box, 300 in ~100 s, 10,000 in about an hour. ``core``:
  `chatapp.auth.service.register_user` for the first account, the same row with the same
  password hash for the others (one argon2 hash in all: every bench account has the same
  password), then `start_session` for each, against the same PostgreSQL (`bench/accounts.py`;
  tokens signed with the server's secret, set by the bench), one process per core: about a
  minute for 10,000. ``auto``
  (default): ``api`` up to 1,000 users (so ``--quick`` goes through the real API), ``core``
  above.
- a conversation per user, through ``POST /api/conversations``;
- the long-history check: a conversation seeded with ``--history-turns`` (500) turns, as SQL
  rows through the core's models, then 6 turns in it against 6 in a new conversation (the
  baseline), one at a time: the first activates the conversation from SQL in its shard, the
  other 5 run the prompt-fitting path on the shard's hot history.

Then one soak per ``--interval`` (each user sends a turn every INTERVAL seconds on average:
10,000 users at 300 / 120 / 60 s offer 33 / 83 / 167 turns/s): ``--warmup`` seconds of
arrivals, then ``--duration`` measured seconds; it drains and stops by itself. History grows
from one interval to the next (same users, same conversations). The load generator is
`bench.openloop`, in ``--loadgens`` processes (default one per 100 offered turns/s, at most
one per core; ~3 ms of its CPU per streamed turn), its CPU measured and printed. A row has
offered and achieved turns/s, TTFT p50/p99 over the engine's own first token, full-reply
p50/p99, errors by HTTP status and error code (SSE ``error`` events by code), ChatApp's CPU
per turn (/proc, every process the run started, as in bench/chat_turn.py; "net" less its
idle CPU, the baseline measured before the soak for ``--idle`` seconds) and its PostgreSQL
backends', the load generators' CPU, the database's connections (peak in the
window / after it; how many sat "idle in transaction"), the conversations the shards hold
(``hot_ids()`` and, where the shard has it, ``hot_bytes()``, through a Ray driver that joins
the bench's cluster after the window, sending the user's default Ray token as a local
``ray.init()`` cluster expects; ``--no-hot`` skips it) and the RSS of every Ray process.

    .venv/bin/python bench/users.py --quick     # 300 users, every 10 s, 30 s: ~4 min quiet
    .venv/bin/python bench/users.py             # 10,000 users, every 300/120/60 s, 120 s
                                                #   each: ~20 min of accounts, then ~9 min
    .venv/bin/python bench/users.py --users 2000 --interval 60 --duration 60
    .venv/bin/python bench/users.py --quick --src /tmp/chatapp-head   # another checkout

The machine is shared with whatever else runs: "other" (cores busy outside ChatApp, its
PostgreSQL backends and the load generators) says how noisy a row is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as `python bench/users.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import LoadGeneratorError, percentile
from bench.openloop import OpenLoopConfig, OpenLoopResult, OpenLoopRun
from bench.probes import WindowUsage, hot_conversations, idle_cores, watch_window
from bench.procs import NCPU, ROOT, Server, Supervisor, rss_by_process
from bench.soak import (
    Account,
    LongHistory,
    create_conversations,
    long_history,
    make_users,
    seed_history,
    soak_overrides,
)
from bench.systems import (
    PG_DEFAULT,
    ChatAppOptions,
    chatapp_overrides,
    clear_redis_prefix,
    pg_connections,
    settings_fields,
    start_chatapp,
    temporary_pg_database,
)

MiB = 1024 * 1024
SHARD = "ConversationShard"  # the shards' process label


@dataclass
class Row:
    interval_s: float
    users: int
    offered: float  # turns/s the arrivals aim at
    result: OpenLoopResult | None
    usage: WindowUsage
    pg_end: int | None  # database connections after the run
    rss: dict[str, int]  # bytes per process label after the run
    hot: list[tuple[int, int | None]] | None  # per shard after the run: (count, bytes)
    note: str = ""


def soak(
    server: Server, accounts: list[Account], interval_s: float, args: argparse.Namespace
) -> Row:
    """One row: open-loop arrivals at `interval_s` per user, the server watched meanwhile."""
    offered = len(accounts) / interval_s
    procs = args.loadgens or max(1, min(NCPU, math.ceil(offered / 100)))
    start_at = time.time() + 5  # the load generators start and import meanwhile
    configs = [
        OpenLoopConfig(
            base_url=server.urls["proxy"],
            users=[(a.access_token, a.conversation_id) for a in accounts[i::procs]],
            interval_s=interval_s,
            start_at=start_at,
            warmup_s=args.warmup,
            duration_s=args.duration,
            reply_tokens=args.reply_tokens,
            seed=int(interval_s * 1000) + i,
        )
        for i in range(procs)
    ]
    plural = "s" if procs > 1 else ""
    print(f"interval {interval_s:g} s: {offered:.1f} turns/s offered by {len(accounts)} users "
          f"({procs} load generator{plural})", flush=True)  # fmt: skip
    run = OpenLoopRun(configs, args.tmp / f"load-{interval_s:g}")
    w0 = start_at + args.warmup
    usage = watch_window(server.token, w0, w0 + args.duration, args.pg_admin, args.dbname)
    result, note = None, ""
    try:
        result = run.result()
    except LoadGeneratorError as exc:
        note = str(exc)
    rss = rss_by_process(server.token)
    states = pg_connections(args.pg_admin, args.dbname)
    pg_end = sum(states.values()) if states is not None else None
    hot = hot_conversations(server, args.worker_overrides, args.src) if args.hot else None
    row = Row(interval_s, len(accounts), offered, result, usage, pg_end, rss, hot, note)
    print("  " + _row_line(row, args), flush=True)
    return row


# --------------------------------------------------------------------------- report


def _fmt(v: float | None, spec: str) -> str:
    if v is None or math.isnan(v):
        return "-".rjust(int(spec.split(".")[0]))
    return format(v, spec)


_HEADER = (
    f"{'interval':>8}{'users':>7}{'offer/s':>8}{'done/s':>8}{'TTFT+50':>8}{'TTFT+99':>8}"
    f"{'reply50':>8}{'reply99':>8}{'turns':>7}{'err':>5}{'srv CPU':>8}{'ms/turn':>8}{'net ms':>7}"
    f"{'PG ms':>6}{'cli CPU':>8}{'other':>6}{'PG conn':>8}{'hot':>7}{'RSS MiB':>8}  errors"
)


def _errors(r: OpenLoopResult) -> dict[str, int]:
    return {**r.errors, "unsent": r.unsent} if r.unsent else dict(r.errors)


def _ms(values: list[float], p: float, minus: float = 0.0) -> float:
    return percentile(values, p) * 1000 - minus


def _row_line(row: Row, args: argparse.Namespace) -> str:
    r, u = row.result, row.usage
    first = 1000 / args.tokens_per_s  # the engine's own first token, ms
    srv = sum(u.server.by_process.values())
    done = r.completed / r.window_s if r else math.nan
    per_turn = 1000 / done if done else math.nan
    cli = r.client_cpu_s / r.window_s if r else math.nan
    other = max(0.0, u.server.machine_cores - srv - u.pg_cores - cli)
    errors = _errors(r) if r else {}
    conns = f"{_fmt(u.pg_peak, '.0f')}/{_fmt(row.pg_end, '.0f')}"
    line = (
        f"{row.interval_s:>8g}{row.users:>7}{row.offered:>8.1f}{_fmt(done, '8.1f')}"
        f"{_fmt(_ms(r.ttft_s, 50, first) if r else None, '8.0f')}"
        f"{_fmt(_ms(r.ttft_s, 99, first) if r else None, '8.0f')}"
        f"{_fmt(_ms(r.latency_s, 50) if r else None, '8.0f')}"
        f"{_fmt(_ms(r.latency_s, 99) if r else None, '8.0f')}"
        f"{_fmt(r.completed if r else None, '7.0f')}{sum(errors.values()):>5}"
        f"{srv:>8.2f}{_fmt(srv * per_turn, '8.1f')}"
        f"{_fmt((srv - args.idle_cores) * per_turn, '7.1f')}{_fmt(u.pg_cores * per_turn, '6.1f')}"
        f"{_fmt(cli, '8.2f')}{other:>6.2f}{conns:>8}"
        f"{_fmt(sum(c for c, _ in row.hot) if row.hot else None, '7.0f')}"
        f"{sum(row.rss.values()) / MiB:>8.0f}  "
        + (", ".join(f"{k} x{v}" for k, v in sorted(errors.items())) or "-")
    )
    return line + (f"  ({row.note})" if row.note else "")


def _target(row: Row, args: argparse.Namespace) -> str:
    """Issue 11's target for the soak: 0 errors, TTFT p99 <= 300 ms over the engine's own."""
    if row.result is None:
        return "no result"
    over = _ms(row.result.ttft_s, 99, 1000 / args.tokens_per_s)
    errors = sum(_errors(row.result).values())
    verdict = "met" if errors == 0 and over <= 300 else "MISSED"
    text = f"{verdict} ({errors} errors, TTFT p99 +{over:.0f} ms; target 0 errors, +300 ms)"
    if row.result.deferred:
        text += f"; {row.result.deferred} arrivals waited for the user's previous turn"
    return text


def _by_size(values: dict[str, float], scale: float, spec: str, least: float = 0.0) -> str:
    top = sorted(values.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v / scale:{spec}}" for k, v in top if v / scale >= least) or "-"


def report(
    rows: list[Row], long: LongHistory | None, setup: dict[str, str], args: argparse.Namespace
) -> None:
    ideal = args.reply_tokens / args.tokens_per_s * 1000
    print(
        f"\nSoak: {args.users} users, open-loop Poisson arrivals, streamed turns of "
        f"{args.reply_tokens} tokens at {args.tokens_per_s:g} tokens/s (the engine's own: first "
        f"token {1000 / args.tokens_per_s:.0f} ms, reply {ideal:.0f} ms); {args.warmup:g} s "
        f"warm-up + {args.duration:g} s per row; {NCPU} cores; PostgreSQL + Redis"
    )
    legend = (
        "offer/s = users / interval; done/s = successful turns ended in the window; TTFT+ = "
        "time to first token event minus the engine's own (ms)",
        "reply = send to end of stream (ms); CPU in cores: srv = ChatApp's processes, ms/turn "
        f"= per done turn, net = less the {args.idle_cores:.2f} cores it uses idle",
        "PG ms = its PostgreSQL backends' CPU per turn; cli = load generators; other = rest of "
        "the machine (noisy when high)",
        "PG conn = database connections, peak in window / at end; hot = conversations the "
        "shards hold after the run; RSS = all ChatApp processes after the run",
    )
    print("\n".join(legend))
    print(_HEADER)
    print("-" * len(_HEADER))
    for row in rows:
        print(_row_line(row, args))
    print()
    for row in rows:
        print(f"  interval {row.interval_s:g} s: {_target(row, args)}")
        if row.usage.pg_peak:
            held = row.usage.pg_idle_in_tx
            print(f"    database connections peaked at {row.usage.pg_peak}, {held} of them idle "
                  "in transaction (sessions held open)")  # fmt: skip
    print("\nServer CPU by process (cores, mean over the window)")
    for row in rows:
        cpu = {**row.usage.server.by_process, "postgres backends": row.usage.pg_cores}
        print(f"  {row.interval_s:g} s: {_by_size(cpu, 1, '.2f', 0.01)}")
    print("\nRSS after each run (MiB, by process)")
    for row in rows:
        print(f"  {row.interval_s:g} s: {_by_size(dict(row.rss), MiB, '.0f')}")
    print("\nHot conversations after each run")
    before = sum(v for k, v in args.rss_before.items() if k.startswith(SHARD))
    for row in rows:
        if row.hot is None:
            print(f"  {row.interval_s:g} s: not read")
            continue
        count = sum(c for c, _ in row.hot)
        sizes = [b for _, b in row.hot if b is not None]
        own = f"{sum(sizes) / MiB:.1f} MiB by the shards' estimate, " if sizes else ""
        shard = sum(v for k, v in row.rss.items() if k.startswith(SHARD))
        grew = (shard - before) / count / 1024 if count > 0 else math.nan
        print(
            f"  {row.interval_s:g} s: {count} ({', '.join(str(c) for c, _ in row.hot)} per "
            f"shard); {own}the shards' RSS {shard / MiB:.0f} MiB, {(shard - before) / MiB:+.0f} "
            f"MiB since before the soak ({_fmt(grew, '.1f')} KiB per hot conversation)"
        )
    if long is not None:
        print("\n" + long.report())
    print()
    for key, value in setup.items():
        print(f"{key}: {value}")


# --------------------------------------------------------------------------- main


def _float_list(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--users", type=int, default=None, help="virtual users (10000; --quick 300)")
    add(
        "--interval",
        type=_float_list,
        default=None,
        help="mean seconds between one user's turns; a comma list runs each (300,120,60)",
    )
    add("--duration", type=float, default=None, help="measured seconds per row (120)")
    add("--warmup", type=float, default=None, help="seconds of arrivals before each row (10)")
    add("--quick", action="store_true", help="300 users, 10 s interval, 30 s")
    add(
        "--accounts",
        choices=["auto", "api", "core"],
        default="auto",
        help="make accounts through the HTTP API or the core (auto: api up to 1000 users)",
    )
    add("--loadgens", type=int, default=0, help="load generator processes (0: 1 per 100/s)")
    add("--history-turns", type=int, default=500, help="the long conversation's turns (0: skip)")
    add("--no-hot", dest="hot", action="store_false", help="do not read the shards' hot_ids()")
    add("--idle", type=float, default=10.0, help="seconds of ChatApp's idle CPU, measured first")
    add("--tokens-per-s", type=float, default=200.0)
    add("--reply-tokens", type=int, default=64)
    add(
        "--postgres",
        default=PG_DEFAULT,
        metavar="ADMIN_URL",
        help=f"create (and drop) the temporary database through ADMIN_URL ({PG_DEFAULT})",
    )
    add(
        "--database-url",
        default=None,
        help="use and keep this PostgreSQL database instead (its accounts are reused)",
    )
    add("--redis-url", default="redis://127.0.0.1:6379/0")
    add("--overrides", type=json.loads, default={}, help="extra ChatApp settings (JSON)")
    add("--src", type=Path, default=ROOT, help="run ChatApp from this checkout (a worktree)")
    add("--start-timeout", type=float, default=180.0)
    add("--keep", action="store_true", help="keep the temp folder (logs)")
    args = parser.parse_args(argv)
    quick = {"users": 300, "interval": [10.0], "duration": 30.0, "warmup": 5.0}
    full = {"users": 10_000, "interval": [300.0, 120.0, 60.0], "duration": 120.0, "warmup": 10.0}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.accounts == "auto":
        args.accounts = "api" if args.users <= 1000 else "core"
    args.src = args.src.resolve()
    return args


def run(stack: contextlib.ExitStack, args: argparse.Namespace) -> None:
    fields = settings_fields(args.src)
    stack.callback(clear_redis_prefix, args.redis_url, args.redis_prefix)
    database_url = args.database_url or stack.enter_context(temporary_pg_database(args.postgres))
    parts = urllib.parse.urlsplit(database_url)
    args.dbname = parts.path.lstrip("/")
    args.pg_admin = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    overrides = soak_overrides(
        fields, redis_url=args.redis_url, redis_prefix=args.redis_prefix, extra=args.overrides
    )
    options = ChatAppOptions(
        src=args.src,
        settings_fields=fields,
        tokens_per_s=args.tokens_per_s,
        reply_tokens=args.reply_tokens,
        database_url=database_url,
        overrides=overrides,
        start_timeout_s=args.start_timeout,
    )
    # The settings ChatApp runs with, for the core's account maker and the shard probe.
    args.worker_overrides = chatapp_overrides(options, port=8000, db_dir=args.tmp / "db")
    supervisor = stack.enter_context(Supervisor())
    print(f"chatapp: starting on database {args.dbname}", flush=True)
    server = start_chatapp(supervisor, args.tmp, "chatapp", {}, options)
    base = server.urls["proxy"]
    accounts, setup = make_users(
        base, args.users, how=args.accounts, overrides=args.worker_overrides, src=args.src,
        folder=args.tmp,
    )  # fmt: skip
    long = None
    if args.history_turns > 0:
        first = accounts[0]
        seeded = seed_history(
            first, args.history_turns, args.reply_tokens, args.worker_overrides, args.src, args.tmp
        )
        fresh = create_conversations(base, [first], 1)[0].conversation_id
        try:
            long = long_history(
                base, first.access_token, fresh, seeded, args.history_turns, args.reply_tokens
            )
            print(long.report(), flush=True)
        except RuntimeError as exc:  # the soak still runs; the report says it is missing
            setup["long history"] = f"failed: {exc}"
    args.rss_before = rss_by_process(server.token)
    args.idle_cores = idle_cores(server, args.idle)
    print(f"idle: ChatApp's processes use {args.idle_cores:.2f} cores with no load", flush=True)
    rows = [soak(server, accounts, interval, args) for interval in args.interval]
    report(rows, long, setup, args)


def main() -> int:
    args = parse_args()
    args.tmp = Path(tempfile.mkdtemp(prefix="users-", dir="/tmp"))
    args.redis_prefix = f"chatbench-{secrets.token_hex(6)}:"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            run(stack, args)
        kept = f"; logs in {args.tmp}" if args.keep else ""
        print(f"\ntotal {time.monotonic() - t_start:.0f} s{kept}")
    finally:
        if not args.keep:
            shutil.rmtree(args.tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
