"""Autoscaling under a load step: replica counts (and nodes) over time.

Helpers shared by `tests/cluster/test_autoscaling.py`: `LoadStep` keeps streamed chat turns
in flight until stopped; `Timeline` samples an application's replica counts from
`serve.status()` (and the cluster's live nodes) and prints them with the load's marks.

Run as a module, it is the node scenario: ChatApp on a Ray cluster whose autoscaler adds
and removes nodes (Ray's fake multi-node provider, the one `AutoscalingCluster` uses: each
"node" is a raylet started on this machine by the autoscaler). The head has room for one
self-hosted model replica; under the load step Serve wants a second one, which fits on no
node, so the autoscaler starts a worker node and the replica lands there; after the load
Serve removes the replica and the autoscaler removes the idle node. It owns its Ray cluster
(the autoscaler's settings are environment variables read when the head starts), so it
runs in a process of its own:

    .venv/bin/python -m tests.cluster.autoscaling --json result.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
from ray import serve

from tests.integration.sse import iter_events

PASSWORD = "correct horse battery staple"
Counts = dict[str, dict[str, int]]


# Autoscaling settings that react within seconds: reports every half second averaged over
# 4 s (a shorter window flapped on this 2-core machine while a node started: a late report
# read as a lull), 1 s above target to add a replica, 4 s below it to remove one.
SHORT_WINDOWS = {
    "autoscaling_metrics_interval_s": 0.5,
    "autoscaling_look_back_period_s": 4,
    "upscale_delay_s": 1,
    "downscale_delay_s": 4,
}


def replicas(app: str) -> Counts:
    """Deployment -> {replica state: count} of application `app`, from serve.status()."""
    status = serve.status().applications[app]
    return {
        name: {str(getattr(state, "value", state)): n for state, n in d.replica_states.items() if n}
        for name, d in status.deployments.items()
    }


def live_nodes() -> int:
    return sum(1 for node in ray.nodes() if node["Alive"])


@dataclass
class Timeline:
    """Replica counts of `app` (and live nodes, with `nodes`) sampled over time, with the
    load step's start and end marked."""

    app: str
    nodes: bool = False
    started: float = field(default_factory=time.monotonic)
    samples: list[tuple[float, Counts]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)

    def sample(self) -> Counts:
        counts = replicas(self.app)
        if self.nodes:
            counts["nodes"] = {"ALIVE": live_nodes()}
        now = round(time.monotonic() - self.started, 1)
        if not self.samples or self.samples[-1][1] != counts:
            self.samples.append((now, counts))
        return counts

    def mark(self, what: str) -> None:
        self.marks.append((round(time.monotonic() - self.started, 1), what))

    def wait_for(self, done: Callable[[Counts], bool], *, timeout_s: float) -> bool:
        """Sample until `done` holds (True) or `timeout_s` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done(self.sample()):
                return True
            time.sleep(0.25)
        return False

    def __str__(self) -> str:
        events = list(self.marks)
        events += [
            (t, "  ".join(f"{d}={sum(c.values())} {c}" for d, c in sorted(counts.items())))
            for t, counts in self.samples
        ]
        return "\n".join(f"{t:6.1f}s  {what}" for t, what in sorted(events, key=lambda e: e[0]))


def register(base_url: str) -> dict[str, str]:
    """A new account on the app at `base_url`; its Authorization header."""
    email = f"load-{uuid.uuid4().hex[:10]}@example.com"
    with httpx.Client(base_url=base_url, timeout=60) as http:
        created = http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        assert created.status_code == 201, created.text
        token = http.post("/api/auth/token", data={"username": email, "password": PASSWORD})
        assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


class LoadStep:
    """`n` streamed chat turns kept in flight (one user, `n` conversations) until stopped."""

    def __init__(self, base_url: str, n: int) -> None:
        self.base_url = base_url
        self.headers = register(base_url)
        with httpx.Client(base_url=base_url, headers=self.headers, timeout=60) as http:
            self.conversations = [
                http.post("/api/conversations", json={}).json()["id"] for _ in range(n)
            ]
        self.done = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._chat, args=(c,), daemon=True) for c in self.conversations
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Let every turn in flight finish, then stop."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads), "a turn did not finish in 60 s"

    def _chat(self, conversation: str) -> None:
        url = f"/api/conversations/{conversation}/messages"
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=60) as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                outcome = self._turn(http, url, f"message {n}")
                with self._lock:
                    if outcome == "done":
                        self.done += 1
                    else:
                        self.failures.append(outcome)

    @staticmethod
    def _turn(http: httpx.Client, url: str, content: str) -> str:
        try:
            with http.stream("POST", url, json={"content": content}) as response:
                if response.status_code != 200:
                    response.read()
                    return f"HTTP {response.status_code}: {response.text[:200]}"
                events = list(iter_events(response))
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if not events or events[-1].event != "done":
            return f"stream ended with {events[-1] if events else 'nothing'}"
        return "done"


# -- the node scenario ------------------------------------------------------------------

APP = "autoscale-nodes"
# Ray nodes have whole CPUs: a model replica reserving 1.5 fits the head beside the shards'
# token shares, a second one does not, and fits a worker node
HEAD_CPUS = 2
WORKER_CPUS = 2
LLM_CPUS = 1.5
STREAMS = 6
PROXY_DRAINING_S = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def autoscaler_config(gcs_address: str) -> dict[str, Any]:
    """The fake multi-node provider's cluster config: the head and up to one worker node."""
    return {
        "cluster_name": "chatapp-autoscaling",
        "max_workers": 1,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,  # the provider's default is port 6379 (Redis's here)
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            "ray.head.default": {
                "resources": {"CPU": HEAD_CPUS},
                "node_config": {},
                "max_workers": 0,
            },
            "ray.worker.cpu": {
                "resources": {"CPU": WORKER_CPUS},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 1,
            },
        },
        "head_node_type": "ray.head.default",
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,  # an idle worker node goes after 6 s
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def stop_processes(pids: list[int], *, grace_s: float = 10) -> None:
    """SIGTERM `pids`, then SIGKILL whichever is still there after `grace_s`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def autoscaling_cluster(workdir: Path) -> Iterator[Any]:
    """A Ray head whose autoscaler starts and stops worker nodes on this machine; yields the
    `Cluster`, connected. Worker nodes are the autoscaler's child processes: they are
    stopped by their process ids with it, so no other Ray on this machine is touched."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID
    from ray.cluster_utils import Cluster

    gcs_port = free_port()
    ip = ray._private.services.get_node_ip_address()
    config = workdir / "autoscaler.json"
    config.write_text(json.dumps(autoscaler_config(f"{ip}:{gcs_port}")))
    # read by the autoscaler process the head starts: the fake provider, a 1 s update loop
    os.environ["RAY_FAKE_CLUSTER"] = "1"
    os.environ["AUTOSCALER_UPDATE_INTERVAL_S"] = "1"
    # Serve drains the proxy of a node that lost its last replica for 30 s before removing
    # it, and the node is not idle until then: 5 s here to keep the run short
    os.environ["RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S"] = str(PROXY_DRAINING_S)
    cluster = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args={
            "num_cpus": HEAD_CPUS,
            "gcs_server_port": gcs_port,
            "include_dashboard": False,
            "autoscaling_config": str(config),
            "env_vars": {"RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID},
        },
    )
    monitor = cluster.head_node.all_processes["monitor"][0].process.pid
    try:
        yield cluster
    finally:
        ray.shutdown()
        nodes = descendants(monitor)  # the worker nodes' raylets, agents and workers
        cluster.head_node.kill_monitor(check_alive=False)
        stop_processes(nodes)
        cluster.shutdown()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from actors.client import kill_shards
    from chatapp.config import Settings
    from deployments.app import build_app

    overrides = {
        "database": {"url": args.database_url},
        "redis": {"url": args.redis_url, "key_prefix": f"{APP}-{uuid.uuid4().hex[:8]}:"},
        "rag": {"enabled": False},
        "llm": {
            "engine": "simulated",
            "simulated_tokens_per_s": 10,
            "simulated_reply_tokens": 30,
            "num_cpus": LLM_CPUS,
            "min_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 2,
        },
        "serve": SHORT_WINDOWS,
        "shards": {"count": 1, "name_prefix": f"{APP}-{uuid.uuid4().hex[:6]}"},
        "auth": {"chat_request_limit": "100000/minute"},
    }
    settings = Settings.from_overrides(overrides)
    with tempfile.TemporaryDirectory() as workdir, autoscaling_cluster(Path(workdir)):
        try:
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(build_app(overrides), name=APP, route_prefix="/")
            return load_step(f"http://127.0.0.1:{port}", args)
        finally:
            serve.shutdown()
            kill_shards(settings)


def replica_nodes() -> list[str]:
    """Node ids of the live self-hosted model replicas."""
    return [
        a["Address"]["NodeID"]
        for a in ray._private.state.actors().values()
        if a.get("State") == "ALIVE" and a.get("ActorClassName", "").endswith(":SelfHostedLLM")
    ]


def load_step(base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    timeline = Timeline(APP, nodes=True)
    llm = "SelfHostedLLM"
    at_rest = timeline.wait_for(
        lambda c: c[llm] == {"RUNNING": 1} and c["nodes"]["ALIVE"] == 1, timeout_s=30
    )
    head = ray.get_runtime_context().get_node_id()
    load = LoadStep(base_url, STREAMS)
    timeline.mark(f"load step: {STREAMS} streamed turns in flight")
    load.start()
    up = timeline.wait_for(
        lambda c: c[llm].get("RUNNING", 0) == 2 and c["nodes"]["ALIVE"] == 2,
        timeout_s=args.timeout,
    )
    placed = replica_nodes()
    timeline.mark("load stops")
    load.stop()
    timeline.mark(f"load stopped ({load.done} turns answered, {len(load.failures)} failed)")
    down = up and timeline.wait_for(
        lambda c: c[llm] == {"RUNNING": 1} and c["nodes"]["ALIVE"] == 1, timeout_s=args.timeout
    )
    timeline.mark("end")
    return {
        "at_rest": at_rest,
        "scaled_up": up,
        "scaled_down": down,
        "replicas_on_head": sum(1 for n in placed if n == head),
        "replicas_on_new_node": sum(1 for n in placed if n != head),
        "turns": load.done,
        "failures": load.failures[:10],
        "timeline": str(timeline),
    }


def main(argv: list[str] | None = None) -> int:
    from bench.systems import PG_DEFAULT, temporary_pg_database

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None, help="default: a temporary database")
    parser.add_argument("--postgres", default=PG_DEFAULT, help="admin URL for the temporary one")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per phase")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.database_url is None:
            args.database_url = stack.enter_context(temporary_pg_database(args.postgres))
        result = run(args)
    print(result["timeline"])
    print({k: v for k, v in result.items() if k != "timeline"})
    if args.json:
        Path(args.json).write_text(json.dumps(result))
    return 0 if result["scaled_up"] and result["scaled_down"] else 1


if __name__ == "__main__":
    sys.exit(main())
