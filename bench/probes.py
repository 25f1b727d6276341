"""What the user soak (`bench/users.py`) reads from a running ChatApp: its CPU with no load,
around a measured window the CPU of its processes and of its PostgreSQL backends and the
database's connections, and after it the conversations its shards hold (through a Ray driver
joining its cluster).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import CpuUsage, Server, cpu_delta, cpu_snapshot, marked_pids, pg_backend_cpu_s
from bench.systems import pg_connections


def idle_cores(server: Server, seconds: float) -> float:
    """The baseline: ChatApp's CPU with no load (Serve's controller, Ray's daemons, pollers)."""
    start = cpu_snapshot(server.token)
    time.sleep(seconds)
    return sum(cpu_delta(start, cpu_snapshot(server.token)).by_process.values())


# --------------------------------------------------------------------------- around a window


@dataclass(frozen=True)
class WindowUsage:
    server: CpuUsage  # ChatApp's processes (the marked ones)
    pg_cores: float  # PostgreSQL's backends serving the database
    pg_peak: int | None  # connections to the database, most seen in the window
    pg_idle_in_tx: int | None  # of which "idle in transaction" (a session held open), most


def watch_window(token: str, w0: float, w1: float, admin_url: str, dbname: str) -> WindowUsage:
    """Sleep to wall-clock `w0`, then to `w1`: the CPU of ChatApp's processes and of the
    database's PostgreSQL backends between them, and its connections every 2 s."""
    time.sleep(max(0.0, w0 - time.time()))
    start, pg_start = cpu_snapshot(token), pg_backend_cpu_s(dbname)
    peak: int | None = None
    held: int | None = None
    while time.time() < w1:
        states = pg_connections(admin_url, dbname)
        if states is not None:
            peak = max(peak or 0, sum(states.values()))
            held = max(held or 0, states.get("idle in transaction", 0))
        time.sleep(max(0.0, min(2.0, w1 - time.time())))
    end, pg_end = cpu_snapshot(token), pg_backend_cpu_s(dbname)
    usage = cpu_delta(start, end)
    pg = sum(cpu - pg_start.get(pid, 0.0) for pid, cpu in pg_end.items())
    return WindowUsage(usage, pg / (end.at - start.at), peak, held)


# --------------------------------------------------------------------------- after a window

_HOT_PROBE = textwrap.dedent(
    """
    import json, sys
    import ray
    from chatapp.config import Settings
    settings = Settings.from_overrides(json.loads(sys.argv[1]))
    ray.init(address=sys.argv[2], namespace=settings.shards.namespace,
             logging_level="ERROR", log_to_driver=False)
    out = []
    for i in range(settings.shards.count):
        try:
            shard = ray.get_actor(f"{settings.shards.name_prefix}-{i}")
            count = len(ray.get(shard.hot_ids.remote(), timeout=60))
        except Exception as exc:
            print(f"shard {i}: {exc!r}", file=sys.stderr)
            out.append([-1, None])
            continue
        try:  # the shards' own estimate of their hot conversations' memory, where they have it
            size = ray.get(shard.hot_bytes.remote(), timeout=60)
        except AttributeError:
            size = None
        out.append([count, size])
    print(json.dumps(out))
    """
)


def gcs_address(token: str) -> str | None:
    """host:port of the GCS of the Ray the marked processes belong to (Ray passes it to its
    raylet, monitor and agents as ``--gcs-address``)."""
    for pid in marked_pids(token):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        for arg in argv:
            for flag in ("--gcs-address=", "--gcs_address="):
                if arg.startswith(flag) and not arg.endswith(":0"):
                    return arg[len(flag) :]
    return None


def hot_conversations(
    server: Server, overrides: dict[str, Any], src: Path
) -> list[tuple[int, int | None]] | None:
    """(hot conversations, their estimated bytes or None) per shard, from
    `ConversationShard.hot_ids()` and `hot_bytes()` where the shard has it, read by a Ray
    driver that joins the cluster of the ChatApp `server` started with `overrides` from
    checkout `src` for the call; None when it cannot (the reason is printed)."""
    address = gcs_address(server.token)
    if address is None:
        print("note: no GCS of the bench's Ray found: hot conversations not read", flush=True)
        return None
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(src), RAY_USAGE_STATS_ENABLED="0")
    # A cluster started by a local `ray.init()` has Ray's token auth on by default, with the
    # user's default token; a driver joining it sends that token only when asked to.
    env.setdefault("RAY_AUTH_MODE", "token")
    cmd = [sys.executable, "-c", _HOT_PROBE, json.dumps(overrides), address]
    try:
        done = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        print(f"note: hot conversations not read: no answer from the Ray at {address}")
        return None
    try:
        shards = json.loads(done.stdout.strip().splitlines()[-1])
        return [(int(c), None if b is None else int(b)) for c, b in shards]
    except (ValueError, IndexError):
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        print(f"note: hot conversations not read from the Ray at {address}:\n{tail}", flush=True)
        return None
