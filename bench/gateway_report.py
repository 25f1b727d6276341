"""The table of `bench/gateway.py`: one row per system, mode and user count, the gateways
beside the upstream direct, the ratios to it, and the issue-11 targets of the ``/v1``
rows (met, or missed and by how much)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from bench.loadgen import LoadResult, percentile
from bench.procs import NCPU

DIRECT = "upstream direct"


@dataclass
class Row:
    system: str
    mode: str  # "json" or "stream"
    users: int
    result: LoadResult | None
    gateway_cpu: dict[str, float]  # cores by process label; empty for the upstream direct
    upstream_cores: float
    machine_cores: float
    note: str = ""


@dataclass(frozen=True)
class Target:
    """One `/v1` row of issue 11's targets table; `before` is its "today" column."""

    mode: str
    users: int
    before: str
    min_ratio: float | None = None  # req/s vs the upstream direct, at least
    max_cpu_ms: float | None = None  # gateway CPU per request, at most
    max_ttft_ms: float | None = None  # TTFT p50 over the direct's, at most

    def figure(self) -> str:
        if self.max_ttft_ms is not None:
            return f"TTFT overhead, {self.users} user{'s' if self.users > 1 else ''}"
        return f"{self.mode}, {self.users} users: req/s x direct (CPU/req)"

    def goal(self) -> str:
        if self.max_ttft_ms is not None:
            return f"<= +{self.max_ttft_ms:g} ms"
        return f">= {self.min_ratio:.2f}x (<= {self.max_cpu_ms:g} ms)"


TARGETS = (
    Target("json", 32, "0.46x (35 ms)", min_ratio=0.85, max_cpu_ms=5),
    Target("stream", 32, "0.38x (44 ms)", min_ratio=0.8, max_cpu_ms=12),
    Target("stream", 1, "+16 ms", max_ttft_ms=3),
)


def stats(row: Row) -> dict[str, float]:
    """A row's figures; NaN where it has none."""
    r = row.result
    lat, ttft = (r.latency_s, r.ttft_s) if r is not None else ([], [])
    tokens = r.completion_tokens if r is not None else []
    rps = r.completed / r.window_s if r is not None else math.nan
    client = r.client_cpu_s / r.window_s if r is not None else math.nan
    upstream = row.upstream_cores if r is not None else math.nan
    measured = r is not None and row.system != DIRECT
    gateway = sum(row.gateway_cpu.values()) if measured else math.nan
    busy = 0.0 if math.isnan(gateway) else gateway
    return {
        "rps": rps,
        "p50": percentile(lat, 50) * 1000,
        "p99": percentile(lat, 99) * 1000,
        "ttft50": percentile(ttft, 50) * 1000 if row.mode == "stream" else math.nan,
        "ttft99": percentile(ttft, 99) * 1000 if row.mode == "stream" else math.nan,
        "tokens": sum(tokens) / len(tokens) if tokens else math.nan,
        "errors": sum(r.errors.values()) if r is not None else math.nan,
        "late": r.late if r is not None else math.nan,
        "gateway": gateway,
        "ms_per_req": gateway * 1000 / rps if rps else math.nan,
        "upstream": upstream,
        "client": client,
        "other": max(0.0, row.machine_cores - busy - upstream - client) if r else math.nan,
    }


HEADER = (
    f"{'system':<16}{'mode':<7}{'users':>5}{'req/s':>8}{'x dir':>7}{'p50 ms':>8}{'p99 ms':>8}"
    f"{'p50 x':>7}{'p99 x':>7}{'TTFT50':>8}{'TTFT99':>8}{'+TTFT':>8}{'tokens':>7}{'err':>5}"
    f"{'late':>5}{'gw CPU':>7}{'ms/req':>7}{'up CPU':>7}{'cli':>6}{'other':>6}"
)


def _fmt(v: float, spec: str) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "-".rjust(int(spec.split(".")[0]))
    return format(v, spec)


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def row_line(row: Row, direct: dict[str, float] | None) -> str:
    """The row's line of the table; ratio columns against `direct` (the upstream direct's
    stats at the same mode and users; None: not known yet)."""
    s = stats(row)
    d = direct or {}
    line = (
        f"{row.system:<16}{row.mode:<7}{row.users:>5}{_fmt(s['rps'], '8.1f')}"
        f"{_fmt(_ratio(s['rps'], d.get('rps', math.nan)), '7.2f')}"
        f"{_fmt(s['p50'], '8.0f')}{_fmt(s['p99'], '8.0f')}"
        f"{_fmt(_ratio(s['p50'], d.get('p50', math.nan)), '7.2f')}"
        f"{_fmt(_ratio(s['p99'], d.get('p99', math.nan)), '7.2f')}"
        f"{_fmt(s['ttft50'], '8.1f')}{_fmt(s['ttft99'], '8.1f')}"
        f"{_fmt(s['ttft50'] - d.get('ttft50', math.nan), '+8.1f')}"
        f"{_fmt(s['tokens'], '7.1f')}{_fmt(s['errors'], '5.0f')}{_fmt(s['late'], '5.0f')}"
        f"{_fmt(s['gateway'], '7.2f')}{_fmt(s['ms_per_req'], '7.1f')}"
        f"{_fmt(s['upstream'], '7.2f')}{_fmt(s['client'], '6.2f')}{_fmt(s['other'], '6.2f')}"
    )
    if row.note:
        line += f"  ({row.note})"
    return line


def _achieved(target: Target, s: dict[str, float], d: dict[str, float]) -> tuple[str, str]:
    """(the figure as the targets table writes it, the verdict against `target`)."""
    if target.max_ttft_ms is not None:
        over = s["ttft50"] - d["ttft50"]
        if math.isnan(over):
            return "-", "not measured"
        verdict = (
            "met" if over <= target.max_ttft_ms else f"missed by {over - target.max_ttft_ms:.1f} ms"
        )
        return f"{over:+.1f} ms", verdict
    ratio, cpu = _ratio(s["rps"], d["rps"]), s["ms_per_req"]
    if math.isnan(ratio):
        return "-", "not measured"
    if math.isnan(cpu):
        return f"{ratio:.2f}x", "missed: no request completed inside the window"
    missed = []
    if target.min_ratio is not None and ratio < target.min_ratio:
        missed.append(f"req/s {target.min_ratio - ratio:.2f}x short")
    if target.max_cpu_ms is not None and cpu > target.max_cpu_ms:
        missed.append(f"CPU {cpu - target.max_cpu_ms:.1f} ms over")
    return f"{ratio:.2f}x ({cpu:.1f} ms)", "missed: " + ", ".join(missed) if missed else "met"


def report_targets(rows: list[Row]) -> None:
    """Issue 11's `/v1` rows: the issue's "today", each gateway in this run, the target and
    ChatApp's verdict (LiteLLM's figures are there to compare, not judged)."""
    by_key = {(r.system, r.mode, r.users): stats(r) for r in rows if r.result is not None}
    gateways = [g for g in ("chatapp", "litellm") if any(r.system == g for r in rows)]
    print()
    print("Issue 11 targets, /v1 gateway (before: the issue's figures; the rest: this run)")
    print(
        f"{'figure':<44}{'before':<15}"
        + "".join(f"{g:<18}" for g in gateways)
        + f"{'target':<21}chatapp vs target"
    )
    for t in TARGETS:
        d = by_key.get((DIRECT, t.mode, t.users))
        line = f"{t.figure():<44}{t.before:<15}"
        verdict = "not measured"
        for g in gateways:
            s = by_key.get((g, t.mode, t.users))
            figure, v = _achieved(t, s, d) if s is not None and d is not None else ("-", "")
            line += f"{figure:<18}"
            if g == "chatapp" and v:
                verdict = v
        print(f"{line}{t.goal():<21}{verdict}")


def report(rows: list[Row], idle: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    """The table, the targets, and each gateway's CPU by process: idle (`idle`, before its
    load) and under each row's load."""
    ideal = args.reply_tokens / args.tokens_per_s
    ceilings = "/".join(f"{n / ideal:.0f}" for n in args.concurrency)
    users = "/".join(str(n) for n in args.concurrency)
    litellm = (
        "skipped"
        if args.no_litellm
        else f"{args.litellm_version or '?'}, {args.litellm_workers} {args.litellm_server} workers"
    )
    print()
    print(
        f"/v1 gateway: fake OpenAI upstream, {args.reply_tokens} tokens at "
        f"{args.tokens_per_s:g} tokens/s (ideal reply {ideal * 1000:.0f} ms; closed-loop "
        f"ceiling {ceilings} req/s at {users} users); {args.duration:g} s per row after "
        f"{args.warmup:g} s warm-up; {NCPU} cores; ChatApp database: "
        f"{'PostgreSQL' if args.database_url else 'SQLite'}; LiteLLM {litellm}"
    )
    print(
        "latency = time to last byte; TTFT = time to the first content chunk; x dir, p50 x, "
        "p99 x = ratio to the upstream direct (same mode, users);\n+TTFT = TTFT50 minus the "
        "direct's (ms); tokens = completion tokens per request; late = requests still "
        "running at the window's end;\nCPU in cores: gw = the gateway's processes (ms/req: "
        "its CPU per request), up = the upstream, cli = load generator, other = the rest of "
        "the machine\n(other users: noisy results when high)"
    )
    print(HEADER)
    print("-" * len(HEADER))
    direct = {(r.mode, r.users): stats(r) for r in rows if r.system == DIRECT and r.result}
    for n in args.concurrency:
        for mode in ("json", "stream"):
            for row in rows:
                if row.mode == mode and row.users == n:
                    print(row_line(row, direct.get((mode, n))))
    report_targets(rows)
    print()
    print("Gateway CPU by process (cores, mean over the window; idle: before any load)")
    for name, usage in idle.items():
        top = sorted(usage.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{k} {v:.2f}" for k, v in top if v >= 0.01)
        print(f"  {name} idle: {sum(usage.values()):.2f} = {shown or '-'}")
    for row in rows:
        top = sorted(row.gateway_cpu.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{k} {v:.2f}" for k, v in top if v >= 0.01)
        if row.system != DIRECT and row.result is not None:
            print(f"  {row.system} {row.mode} {row.users}: {shown or '-'}")
    errs = [(r, r.result.errors) for r in rows if r.result and r.result.errors]
    if errs:
        print()
        print("Errors (status:kind count)")
        for row, e in errs:
            print(f"  {row.system} {row.mode} {row.users}: {e}")
