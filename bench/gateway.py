"""OpenAI-compatible gateway benchmark: ChatApp's ``/v1`` and LiteLLM's proxy side by side,
in front of the same fake OpenAI upstream, against that upstream called directly.

The upstream (`bench/upstream.py`: the test suite's `FakeOpenAI`, the real wire format, a
64-token reply at 200 tokens/s) runs in a process of its own for the whole run. The
systems then run one after another, each alone in front of it:

- ``upstream direct``: the load sent straight to the upstream (the baseline);
- ``chatapp``: ``chatapp run`` (bench/systems.py) with settings overrides making the
  upstream its primary provider (a catalog entry ``gpt-bench`` on provider ``openai``),
  the response cache, retrieval and per-user limits off, called as a gateway user would:
  with an API key created through ChatApp's own API and ``model: gpt-bench``;
- ``litellm``: LiteLLM's proxy from its own virtual environment ``.venv-litellm``
  (`bench/litellm-env.sh`, pinned to 1.82.6: never 1.82.7 or 1.82.8, both compromised on
  PyPI), 2 workers under gunicorn, ``gpt-bench`` → ``openai/…`` at the upstream, no
  database, a master key as the client's key.

Every system gets the same closed-loop load (`bench/openai_load.py`, a process of its
own): 1 and 32 users, non-streamed and streamed (``stream_options.include_usage``)
requests of a short prompt. The table gives req/s, p50/p99 latency, time to the first
content (streamed), each gateway's server CPU per request read from /proc for its
processes (`bench/procs.py`), and the ratios to the upstream direct; then the issue-11
targets for the ``/v1`` rows, met or missed and by how much, with LiteLLM beside them.

    .venv/bin/python bench/gateway.py                  # ~5 minutes
    .venv/bin/python bench/gateway.py --quick          # smoke run, ~3 minutes
    .venv/bin/python bench/gateway.py --no-litellm     # without the peer
    .venv/bin/python bench/gateway.py --postgres       # ChatApp on PostgreSQL
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

if not __package__:  # run as `python bench/gateway.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gateway_report import Row, report, row_line
from bench.loadgen import LoadGeneratorError, LoadResult
from bench.openai_load import OpenAILoadConfig, request_body, run_load
from bench.procs import ROOT, CpuSnapshot, Server, Supervisor, cpu_delta, cpu_snapshot, free_port
from bench.systems import (
    PG_DEFAULT,
    ChatAppOptions,
    settings_fields,
    start_chatapp,
    temporary_pg_database,
)

MODEL = "gpt-bench"  # the public model name clients send, to either gateway
UPSTREAM_MODEL = "gpt-bench-upstream"  # the id the gateways ask the upstream for
UPSTREAM_KEY = "sk-bench-upstream"  # the fake accepts any key
LITELLM_VENV = ROOT / ".venv-litellm"
LITELLM_ENV_SCRIPT = ROOT / "bench" / "litellm-env.sh"

# --------------------------------------------------------------------------- systems


def _post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def start_upstream(supervisor: Supervisor, tmp: Path, args: argparse.Namespace) -> Server:
    port = free_port()
    cmd = [
        sys.executable, "-m", "bench.upstream", "--port", str(port),
        "--tokens-per-s", str(args.tokens_per_s), "--reply-tokens", str(args.reply_tokens),
    ]  # fmt: skip
    server = supervisor.start(
        "upstream direct",
        cmd,
        cwd=ROOT,
        log=tmp / "upstream.log",
        health_url=f"http://127.0.0.1:{port}/healthz",
        timeout_s=60,
    )
    server.urls["v1"] = f"http://127.0.0.1:{port}/v1"
    return server


def chatapp_gateway_overrides(upstream_v1: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Settings overrides making the upstream ChatApp's primary (`extra` merged per section
    over them)."""
    providers = {
        "openai_api_key": UPSTREAM_KEY,
        "openai_base_url": upstream_v1,
        "models": [
            {
                "name": MODEL,
                "provider": "openai",
                "provider_model": UPSTREAM_MODEL,
                "context_window": 16000,
            }
        ],
        "primary": MODEL,
    }
    out: dict[str, Any] = {"providers": providers}
    for section, values in extra.items():
        if isinstance(values, dict) and isinstance(out.get(section), dict):
            out[section] = {**out[section], **values}
        else:
            out[section] = values
    return out


def start_chatapp_gateway(supervisor: Supervisor, tmp: Path, options: ChatAppOptions) -> Server:
    """`chatapp run` (a bench account registered and logged in by `start_chatapp`), then an
    API key for that account: the load calls /v1 with the key, as a gateway user would."""
    server = start_chatapp(supervisor, tmp, "chatapp", {}, options)
    base = server.urls["proxy"]
    status, raw = _post(f"{base}/api/keys", {"name": "bench"}, server.headers)
    if status != 201:
        raise RuntimeError(f"POST /api/keys: HTTP {status}: {raw[:500]!r}")
    server.headers = {"Authorization": f"Bearer {json.loads(raw)['key']}"}
    server.urls = {"v1": f"{base}/v1"}
    return server


def litellm_version() -> str | None:
    """The LiteLLM release in .venv-litellm (from its dist-info), None when absent."""
    found = sorted(LITELLM_VENV.glob("lib/python*/site-packages/litellm-*.dist-info"))
    return found[-1].name.removesuffix(".dist-info").split("-", 1)[1] if found else None


def ensure_litellm_venv() -> str:
    """Create or update .venv-litellm (`bench/litellm-env.sh`: at once when up to date);
    raise RuntimeError when that fails."""
    print(f"  {LITELLM_ENV_SCRIPT.relative_to(ROOT)} (a first run builds the venv: minutes)")
    done = subprocess.run(
        ["bash", str(LITELLM_ENV_SCRIPT)], cwd=ROOT, capture_output=True, text=True
    )
    version = litellm_version()
    if done.returncode != 0 or version is None:
        raise RuntimeError(
            f"{LITELLM_ENV_SCRIPT.relative_to(ROOT)} failed (rc {done.returncode}): "
            f"{(done.stderr or done.stdout)[-1500:]}\n(--no-litellm skips the peer)"
        )
    if version in ("1.82.7", "1.82.8"):  # compromised releases: never run them
        raise RuntimeError(f"litellm {version} in {LITELLM_VENV} is a compromised release")
    return version


def start_litellm(
    supervisor: Supervisor, tmp: Path, upstream: Server, args: argparse.Namespace
) -> Server:
    """LiteLLM's proxy with `args.litellm_workers` workers: `MODEL` routed to the upstream as
    an OpenAI model, no database, a master key (what the load sends).

    The workers run under gunicorn by default (``--run_gunicorn``, LiteLLM's choice for
    several workers: the app is loaded once, then forked). Under ``--litellm-server
    uvicorn`` each worker is spawned and imports LiteLLM itself (5-6 s of CPU), and uvicorn
    kills a worker that has not answered its health check within 5 s: on a busy 2-core
    machine they are killed over and over and the proxy never starts."""
    port = free_port()
    master_key = f"sk-bench-{uuid.uuid4().hex}"
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{UPSTREAM_MODEL}",
                    "api_base": upstream.urls["v1"],
                    "api_key": UPSTREAM_KEY,
                },
            }
        ],
        "general_settings": {"master_key": master_key},
    }
    config_path = tmp / "litellm-config.yaml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    cmd = [
        # ChatApp's DATABASE_URL, where exported, would send LiteLLM looking for Prisma
        "env", "-u", "DATABASE_URL",
        str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config_path),
        "--host", "127.0.0.1", "--port", str(port),
        "--num_workers", str(args.litellm_workers), "--telemetry", "False",
    ]  # fmt: skip
    if args.litellm_server == "gunicorn":
        cmd.append("--run_gunicorn")
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}  # no fetch, quiet
    t0 = time.monotonic()
    server = supervisor.start(
        "litellm",
        cmd,
        cwd=tmp,
        log=tmp / "litellm.log",
        health_url=f"http://127.0.0.1:{port}/health/liveliness",
        timeout_s=args.start_timeout,
        env=env,
    )
    server.urls["v1"] = f"http://127.0.0.1:{port}/v1"
    server.headers = {"Authorization": f"Bearer {master_key}"}
    print(f"  LiteLLM up in {time.monotonic() - t0:.0f} s (:{port})", flush=True)
    return server


def probe(server: Server, args: argparse.Namespace) -> None:
    """One request of each kind through `server`; each must carry the upstream's reply
    (not, say, ChatApp's self-hosted fallback). Raises RuntimeError otherwise."""
    url = server.urls["v1"] + "/chat/completions"
    for stream in (False, True):
        body = request_body(model=MODEL, text="probe", max_tokens=args.reply_tokens, stream=stream)
        status, raw = _post(url, body, server.headers)
        if stream:
            ok = status == 200 and b"tok0" in raw and b"[DONE]" in raw and b'"usage"' in raw
        else:
            try:
                content = json.loads(raw)["choices"][0]["message"]["content"]
            except (ValueError, LookupError, TypeError):
                content = None
            ok = status == 200 and isinstance(content, str) and content.startswith("tok0")
        if not ok:
            kind = "streamed" if stream else "non-streamed"
            raise RuntimeError(f"{server.name}: {kind} probe: HTTP {status}: {raw[:600]!r}")


# --------------------------------------------------------------------------- measurement


def measure(
    name: str,
    gateway: Server | None,
    upstream: Server,
    stream: bool,
    users: int,
    args: argparse.Namespace,
) -> Row:
    """One row: the load through `gateway` (None: straight to the upstream), with the CPU of
    the gateway's processes and of the upstream snapshotted at the window's edges."""
    target = gateway or upstream
    config = OpenAILoadConfig(
        base_url=target.urls["v1"],
        model=MODEL,
        concurrency=users,
        stream=stream,
        warmup_s=args.warmup,
        duration_s=args.duration,
        max_tokens=args.reply_tokens,
        headers=target.headers,
    )
    snaps: dict[str, tuple[CpuSnapshot | None, CpuSnapshot]] = {}

    def mark(edge: str) -> None:
        snaps[edge] = (
            cpu_snapshot(gateway.token) if gateway else None,
            cpu_snapshot(upstream.token),
        )

    result: LoadResult | None = None
    note = ""
    try:
        result = run_load(config, mark)
    except LoadGeneratorError as exc:
        note = str(exc)
    gateway_cpu: dict[str, float] = {}
    upstream_cores = machine = math.nan
    if "start" in snaps and "end" in snaps:
        (gw_a, up_a), (gw_b, up_b) = snaps["start"], snaps["end"]
        up = cpu_delta(up_a, up_b)
        upstream_cores, machine = sum(up.by_process.values()), up.machine_cores
        if gw_a is not None and gw_b is not None:
            gateway_cpu = cpu_delta(gw_a, gw_b).by_process
    mode = "stream" if stream else "json"
    row = Row(name, mode, users, result, gateway_cpu, upstream_cores, machine, note)
    print("  " + row_line(row, None), flush=True)
    return row


def idle_cpu(server: Server, seconds: float) -> dict[str, float]:
    """Cores by process of `server` with no load: its floor (Ray's own processes, pollers)."""
    a = cpu_snapshot(server.token)
    time.sleep(seconds)
    return cpu_delta(a, cpu_snapshot(server.token)).by_process


def measure_system(
    name: str, gateway: Server | None, upstream: Server, args: argparse.Namespace
) -> list[Row]:
    return [
        measure(name, gateway, upstream, stream, users, args)
        for users in args.concurrency
        for stream in (False, True)
    ]


def _not_started(name: str, args: argparse.Namespace, why: str) -> list[Row]:
    return [
        Row(name, mode, users, None, {}, math.nan, math.nan, why)
        for users in args.concurrency
        for mode in ("json", "stream")
    ]


def measure_all(
    supervisor: Supervisor, tmp: Path, chatapp: ChatAppOptions, args: argparse.Namespace
) -> tuple[list[Row], dict[str, dict[str, float]]]:
    """The upstream direct, then each gateway alone in front of it: the rows, and each
    gateway's idle CPU by process."""
    print("upstream: fake OpenAI (bench/upstream.py)", flush=True)
    upstream = start_upstream(supervisor, tmp, args)
    probe(upstream, args)
    rows = measure_system(upstream.name, None, upstream, args)
    chatapp = dataclasses.replace(
        chatapp, overrides=chatapp_gateway_overrides(upstream.urls["v1"], chatapp.overrides)
    )
    idle: dict[str, dict[str, float]] = {}
    gateways: list[str] = ["chatapp"] + ([] if args.no_litellm else ["litellm"])
    for name in gateways:
        print(f"{name}: starting", flush=True)
        try:
            if name == "chatapp":
                gateway = start_chatapp_gateway(supervisor, tmp, chatapp)
            else:
                args.litellm_version = ensure_litellm_venv()
                gateway = start_litellm(supervisor, tmp, upstream, args)
        except RuntimeError as exc:
            print(f"  {exc}", flush=True)
            rows += _not_started(name, args, "did not start")
            continue
        try:
            probe(gateway, args)
            idle[name] = idle_cpu(gateway, args.idle)
            rows += measure_system(name, gateway, upstream, args)
        except RuntimeError as exc:
            print(f"  {exc}", flush=True)
            rows += _not_started(name, args, "probe failed")
        finally:
            supervisor.stop(gateway)
    supervisor.stop(upstream)
    return rows, idle


# --------------------------------------------------------------------------- main


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per row")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each row")
    parser.add_argument(
        "--concurrency", type=_int_list, default=[1, 32], help="virtual users (default 1,32)"
    )
    parser.add_argument("--tokens-per-s", type=float, default=200.0)
    parser.add_argument("--reply-tokens", type=int, default=64)
    parser.add_argument(
        "--idle", type=float, default=3.0, help="seconds of each gateway's idle CPU reading"
    )
    parser.add_argument("--quick", action="store_true", help="4 s rows after 2 s warm-up")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM rows")
    parser.add_argument("--litellm-workers", type=int, default=2)
    parser.add_argument(
        "--litellm-server",
        choices=("gunicorn", "uvicorn"),
        default="gunicorn",
        help="what runs LiteLLM's workers (default gunicorn; see start_litellm)",
    )
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
        help='extra ChatApp settings overrides, e.g. \'{"providers": {"retry_attempts": 1}}\'',
    )
    parser.add_argument(
        "--src", type=Path, default=ROOT, help="run ChatApp from this checkout (a worktree)"
    )
    parser.add_argument("--start-timeout", type=float, default=240.0)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 4.0, 2.0
    args.src = args.src.resolve()
    args.litellm_version = None
    return args


def main() -> int:
    args = parse_args()
    fields = settings_fields(args.src)
    tmp = Path(tempfile.mkdtemp(prefix="gwb-", dir="/tmp"))
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
                overrides=args.overrides,  # the upstream's provider settings added once it runs
                start_timeout_s=args.start_timeout,
            )
            supervisor = stack.enter_context(Supervisor())
            rows, idle = measure_all(supervisor, tmp, chatapp, args)
            report(rows, idle, args)
            kept = f"; logs in {tmp}" if args.keep else ""
            print(f"\ntotal {time.monotonic() - t_start:.0f} s{kept}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
