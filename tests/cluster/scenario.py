"""Faults under load on a multi-node Ray cluster on one machine (`ray.cluster_utils.Cluster`).

A head node and worker nodes (separate raylets, each with its own workers), ChatApp's Serve
application on them (simulated engine, PostgreSQL, Redis), conversation shards spread over
the nodes; users chat in a loop (streamed turns) while faults are injected one after
another. Per fault: requests that failed from the fault to the next one (those in flight
when it hit included) and how (HTTP status, an SSE ``error`` event's code, a stream cut, a
connection refused), how many failed HTTP answers carried ``Retry-After``, the time until
every user had a turn answered again, and, at the end, acknowledged messages lost and
sequence numbers duplicated (both must be 0), read back through the API.

Faults (``--faults``, in order, ``--spacing`` seconds apart, or ``--window FAULT=S`` after
one): ``node`` removes the worker node holding the most shards (`Cluster.remove_node`: its
raylet and every worker on it die); ``shard`` kills a shard actor; ``ingress``, ``router``
and ``llm`` kill a replica of that deployment; ``postgres`` stops PostgreSQL (``pg_ctl stop
-m fast``: every connection cut) for ``--pg-down-s`` (3) and starts it again; ``redis``
shuts Redis down (``SHUTDOWN NOSAVE``) for ``--redis-down-s`` (5) and starts it again,
empty. For those two the run uses a PostgreSQL / Redis of its own
(`tests/cluster/stores.py`: ``initdb`` in a temporary directory, a ``redis-server`` on a
free port), never the machine's shared servers. Runs in its own process (it owns its Ray
cluster): `tests/cluster/test_multinode.py` runs the short form (``redis,node``), ``make
chaos`` the whole set.

    .venv/bin/python -m tests.cluster.scenario \
        --faults node,shard,ingress,router,llm,postgres,redis
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
from ray import serve
from ray.cluster_utils import Cluster

from actors.client import kill_shards, shard_names
from bench.systems import PG_DEFAULT, temporary_pg_database
from chatapp.config import Settings
from deployments.app import build_app
from tests.cluster.stores import PrivatePostgres, PrivateRedis
from tests.integration.sse import iter_events

PASSWORD = "correct horse battery staple"
FAULTS = ("node", "shard", "ingress", "router", "llm", "postgres", "redis")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Turn:
    user: int
    started: float
    ended: float
    ok: bool
    # "done", or how it failed: an HTTP status ("503"), an SSE error event's code ("sse
    # conflict"), the stream cut after its headers ("stream cut (RemoteProtocolError)"), or
    # the exception before any answer ("ConnectError")
    status: str
    user_seq: int | None = None
    reply_id: str | None = None
    retry_after: bool | None = None  # a failed HTTP answer: whether it had Retry-After
    detail: str = ""  # a failure's message: the error body's, the SSE error's, the exception's


@dataclass
class FaultRow:
    fault: str
    target: str
    at_s: float
    failed: int = 0
    recovered_s: float | None = None  # until every user had a turn answered again
    statuses: dict[str, int] = field(default_factory=dict)  # how the failed requests failed
    in_flight: dict[str, int] = field(default_factory=dict)  # of those, sent before the fault
    # failed HTTP answers (status >= 400) with and without a Retry-After header
    retry_after: dict[str, int] = field(default_factory=dict)
    down_s: float | None = None  # postgres, redis: how long the server was down
    messages: dict[str, str] = field(default_factory=dict)  # per failure kind, its first message


class Users:
    """`n` users, each with an account and a conversation, chatting in a loop."""

    def __init__(self, base_url: str, n: int) -> None:
        self.base_url = base_url
        self.turns: list[Turn] = []
        self.headers: list[dict[str, str]] = []
        self.conversations: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        with httpx.Client(base_url=base_url, timeout=60) as http:
            for i in range(n):
                email = f"chaos-{uuid.uuid4().hex[:8]}-{i}@example.com"
                created = http.post(
                    "/api/auth/register", json={"email": email, "password": PASSWORD}
                )
                assert created.status_code == 201, created.text
                token = http.post("/api/auth/token", data={"username": email, "password": PASSWORD})
                headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
                conv = http.post("/api/conversations", json={}, headers=headers).json()["id"]
                self.headers.append(headers)
                self.conversations.append(conv)
        self._threads = [threading.Thread(target=self._chat, args=(i,)) for i in range(n)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)

    def _chat(self, i: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60, headers=self.headers[i]) as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                turn = self._turn(http, i, f"message {n} from user {i}")
                with self._lock:
                    self.turns.append(turn)
                if not turn.ok:
                    time.sleep(0.5)  # as a client would before retrying

    def _turn(self, http: httpx.Client, i: int, content: str) -> Turn:
        started = time.monotonic()
        url = f"/api/conversations/{self.conversations[i]}/messages"
        answered = False
        try:
            with http.stream("POST", url, json={"content": content}) as response:
                answered = True
                if response.status_code != 200:
                    response.read()
                    has_retry_after = "retry-after" in response.headers
                    status = str(response.status_code)
                    return Turn(i, started, time.monotonic(), False, status, None, None,
                                has_retry_after, _message(response.text))  # fmt: skip
                events = list(iter_events(response))
        except httpx.HTTPError as exc:
            kind = f"stream cut ({type(exc).__name__})" if answered else type(exc).__name__
            return Turn(i, started, time.monotonic(), False, kind, detail=str(exc))
        last = events[-1] if events else None
        if last is None or last.event != "done":
            if last is None or last.event != "error":
                return Turn(i, started, time.monotonic(), False, "stream cut (no done event)")
            error = last.json().get("error", {})
            return Turn(i, started, time.monotonic(), False, f"sse {error.get('code', '?')}",
                        detail=str(error.get("message", "")))  # fmt: skip
        done = last.json()
        user_seq = next((e.json()["seq"] for e in events if e.event == "start"), None)
        return Turn(i, started, time.monotonic(), True, "done", user_seq, done["message_id"])

    def since(self, t: float) -> list[Turn]:
        """Turns started at `t` or later (and ended)."""
        with self._lock:
            return [turn for turn in self.turns if turn.started >= t]

    def ended_since(self, t: float) -> list[Turn]:
        """Turns that ended at `t` or later, those in flight at `t` included."""
        with self._lock:
            return [turn for turn in self.turns if turn.ended >= t]


def _message(body: str) -> str:
    """An error answer's message: the envelope's, or the start of the body."""
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200]


def live_actors() -> list[dict[str, Any]]:
    """The cluster's live actors from the GCS (name, class, node id)."""
    return [
        {
            "name": a.get("Name", ""),
            "class": a.get("ActorClassName", ""),
            "node": a["Address"]["NodeID"],
        }
        for a in ray._private.state.actors().values()
        if a.get("State") == "ALIVE"
    ]


def shard_nodes(settings: Settings) -> dict[str, str]:
    """Shard actor name -> the node id it runs on."""
    names = set(shard_names(settings))
    return {a["name"]: a["node"] for a in live_actors() if a["name"] in names}


def replica_nodes() -> dict[str, list[str]]:
    """Deployment -> node ids of its live replicas."""
    placed: dict[str, list[str]] = {}
    for a in live_actors():
        if a["class"].startswith("ServeReplica:chaos:"):
            placed.setdefault(a["class"].split(":")[-1], []).append(a["node"])
    return placed


def kill_replica(deployment: str) -> str:
    for a in live_actors():
        if a["class"] == f"ServeReplica:chaos:{deployment}":
            ray.kill(ray.get_actor(a["name"], namespace="serve"), no_restart=True)
            return str(a["name"])
    raise RuntimeError(f"no live replica of {deployment}")


@dataclass
class Stores:
    """The run's own PostgreSQL and Redis, where a fault stops them, and their downtimes."""

    postgres: PrivatePostgres | None = None
    redis: PrivateRedis | None = None
    pg_down_s: float = 3.0
    redis_down_s: float = 5.0


def inject(
    fault: str, cluster: Cluster, settings: Settings, stores: Stores
) -> tuple[str, float | None]:
    """Inject `fault`: what it hit, and for a server stopped and started, how long it was
    down (the call returns once it is back)."""
    if fault == "postgres":
        assert stores.postgres is not None
        down = stores.postgres.outage(stores.pg_down_s)
        return f"PostgreSQL :{stores.postgres.port} stopped (fast), started", down
    if fault == "redis":
        assert stores.redis is not None
        down = stores.redis.outage(stores.redis_down_s)
        return f"Redis :{stores.redis.port} shut down (nosave), started", down
    return inject_ray(fault, cluster, settings), None


def inject_ray(fault: str, cluster: Cluster, settings: Settings) -> str:
    if fault == "node":
        by_node = Counter(shard_nodes(settings).values())
        workers = {n.node_id: n for n in cluster.worker_nodes}
        candidates = [(by_node.get(node_id, 0), node_id) for node_id in workers]
        _, node_id = max(candidates)
        cluster.remove_node(workers[node_id])
        return f"worker node {node_id[:8]} ({by_node.get(node_id, 0)} shards)"
    if fault == "shard":
        name = shard_names(settings)[0]
        ray.kill(ray.get_actor(name, namespace=settings.shards.namespace), no_restart=False)
        return name
    deployment = {"ingress": "ChatIngress", "router": "ChatRouter", "llm": "SelfHostedLLM"}[fault]
    return kill_replica(deployment)


def recovery(users: Users, at: float, n_users: int) -> float | None:
    """Seconds from `at` until every user had a turn, started after `at`, answered."""
    first_ok: dict[int, float] = {}
    for turn in users.since(at):
        if turn.ok and turn.user not in first_ok:
            first_ok[turn.user] = turn.ended
    if len(first_ok) < n_users:
        return None
    return max(first_ok.values()) - at


def read_all(http: httpx.Client, conv: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every stored message of `conv`, page by page (newest pages first)."""
    messages: list[dict[str, Any]] = []
    params: dict[str, int] = {"limit": 200}
    while True:
        page = http.get(f"/api/conversations/{conv}", params=params, headers=headers).json()
        messages = page["messages"] + messages
        if not page["has_more"]:
            return messages
        params["before"] = page["messages"][0]["seq"]


def check_history(users: Users) -> dict[str, int]:
    """Acknowledged replies missing from the stored history, and duplicated seqs."""
    acknowledged = [t for t in users.turns if t.ok]
    lost = duplicated = 0
    with httpx.Client(base_url=users.base_url, timeout=60) as http:
        for i, conv in enumerate(users.conversations):
            messages = read_all(http, conv, users.headers[i])
            ids = {m["id"] for m in messages}
            seqs = [m["seq"] for m in messages]
            duplicated += len(seqs) - len(set(seqs))
            lost += sum(1 for t in acknowledged if t.user == i and t.reply_id not in ids)
    return {"acknowledged": len(acknowledged), "lost": lost, "duplicated": duplicated}


def fault_row(
    fault: str, target: str, at: float, t0: float, down_s: float | None, users: Users, n: int
) -> FaultRow:
    # what failed from the fault to now (the next fault): requests in flight when it hit,
    # whenever they failed (a stream cut, a timeout), and those sent after it
    failed = [t for t in users.ended_since(at) if not t.ok]
    http_errors = [t for t in failed if t.retry_after is not None]
    with_header = sum(1 for t in http_errors if t.retry_after)
    messages: dict[str, str] = {}
    for t in failed:
        messages.setdefault(t.status, t.detail[:200])
    return FaultRow(
        fault,
        target,
        round(at - t0, 1),
        len(failed),
        recovery(users, at, n),
        dict(Counter(t.status for t in failed).most_common()),
        dict(Counter(t.status for t in failed if t.started < at).most_common()),
        {"with": with_header, "without": len(http_errors) - with_header},
        None if down_s is None else round(down_s, 1),
        messages,
    )


def run(args: argparse.Namespace, stores: Stores) -> dict[str, Any]:
    port = free_port()
    cluster = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args={"num_cpus": 2, "gcs_server_port": free_port(), "include_dashboard": False},
    )
    for _ in range(args.workers):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    overrides = {
        "database": {"url": args.database_url},
        "redis": {"url": args.redis_url, "key_prefix": f"chaos-{uuid.uuid4().hex[:8]}:"},
        "llm": {
            "engine": "simulated",
            "simulated_tokens_per_s": 100,
            "simulated_reply_tokens": 20,
        },
        "rag": {"enabled": False},
        "shards": {"count": 3, "name_prefix": f"chaos-shard-{uuid.uuid4().hex[:6]}"},
        "serve": {"ingress_min_replicas": 2, "router_min_replicas": 2},
        "auth": {"register_ip_limit": "10000/hour", "chat_request_limit": "100000/minute"},
    }
    settings = Settings.from_overrides(overrides)
    rows: list[FaultRow] = []
    try:
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(overrides), name="chaos", route_prefix="/")
        base_url = f"http://127.0.0.1:{port}"
        users = Users(base_url, args.users)
        users.start()
        t0 = time.monotonic()
        time.sleep(args.warmup)
        placement = {"shards": shard_nodes(settings), "replicas": replica_nodes()}
        for fault in args.faults:
            at = time.monotonic()
            target, down_s = inject(fault, cluster, settings, stores)
            window = args.window.get(fault, args.spacing)
            time.sleep(max(0.0, at + window - time.monotonic()))
            rows.append(fault_row(fault, target, at, t0, down_s, users, args.users))
        users.stop()
        history = check_history(users)
        return {
            "nodes": 1 + args.workers,
            "users": args.users,
            "turns": len(users.turns),
            "placement": placement,
            "faults": [asdict(r) for r in rows],
            **history,
        }
    finally:
        serve.shutdown()
        kill_shards(settings)
        ray.shutdown()
        cluster.shutdown()


def _statuses(statuses: dict[str, int]) -> str:
    """`{503: 12, 'stream cut (ReadError)': 3}`: HTTP statuses as numbers."""
    return str({int(k) if k.isdigit() else k: n for k, n in statuses.items()})


def report(result: dict[str, Any]) -> None:
    print(
        f"{result['nodes']} nodes, {result['users']} users, {result['turns']} turns; "
        f"shards on {len(set(result['placement']['shards'].values()))} nodes; replicas: "
        + ", ".join(f"{k} on {len(set(v))}" for k, v in result["placement"]["replicas"].items())
    )
    print(
        f"{'fault':<9}{'target':<44}{'at s':>6}{'down s':>8}{'failed':>8}{'recovered s':>13}"
        f"{'Retry-After':>13}  failed requests"
    )
    for row in result["faults"]:
        rec, down, ra = row["recovered_s"], row["down_s"], row["retry_after"]
        http_failed = ra["with"] + ra["without"]
        with_header = f"{ra['with']}/{http_failed}" if http_failed else "-"
        in_flight = row["in_flight"] and f", in flight at the fault: {_statuses(row['in_flight'])}"
        print(
            f"{row['fault']:<9}{row['target'][:43]:<44}{row['at_s']:>6.1f}"
            f"{('-' if down is None else f'{down:.1f}'):>8}{row['failed']:>8}"
            f"{('-' if rec is None else f'{rec:.1f}'):>13}"
            f"{with_header:>13}"
            f"  {_statuses(row['statuses'])}{in_flight or ''}"
        )
    print(
        "(down s: how long the server was down; recovered s: from the fault until every user"
        " had a turn answered again; Retry-After: failed HTTP answers that had the header;"
        " failed requests: those that ended after the fault, by HTTP status, SSE error event"
        " code or exception)"
    )
    for row in result["faults"]:
        for kind, message in row["messages"].items():
            print(f"  {row['fault']}: {kind}: {message[:120]}")
    print(
        f"acknowledged replies: {result['acknowledged']}, lost: {result['lost']}, "
        f"duplicated seqs: {result['duplicated']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=None,
        help="use this database (default: a temporary one; with the postgres fault, a "
        "PostgreSQL of the run's own)",
    )
    parser.add_argument("--postgres", default=PG_DEFAULT, help="admin URL for the temporary one")
    parser.add_argument(
        "--redis-url",
        default=None,
        help="use this Redis (default: 127.0.0.1:6379; with the redis fault, one of the run's own)",
    )
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2, help="worker nodes beside the head")
    parser.add_argument("--faults", type=lambda s: s.split(","), default=["node"])
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--spacing", type=float, default=20.0, help="seconds between faults")
    parser.add_argument(
        "--window",
        type=lambda s: (s.split("=")[0], float(s.split("=")[1])),
        action="append",
        default=[],
        metavar="FAULT=S",
        help="seconds from this fault to the next (or the end) instead of --spacing",
    )
    parser.add_argument("--pg-down-s", type=float, default=3.0, help="postgres fault: downtime")
    parser.add_argument("--redis-down-s", type=float, default=5.0, help="redis fault: downtime")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    args.window = dict(args.window)
    unknown = (set(args.faults) | set(args.window)) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    stores = Stores(pg_down_s=args.pg_down_s, redis_down_s=args.redis_down_s)
    with contextlib.ExitStack() as stack:
        if "postgres" in args.faults:
            if args.database_url is not None:
                parser.error("the postgres fault stops the run's own PostgreSQL: no --database-url")
            stores.postgres = stack.enter_context(PrivatePostgres())
            args.database_url = stores.postgres.url
        elif args.database_url is None:
            args.database_url = stack.enter_context(temporary_pg_database(args.postgres))
        if "redis" in args.faults:
            if args.redis_url is not None:
                parser.error("the redis fault stops a Redis of the run's own: no --redis-url")
            stores.redis = stack.enter_context(PrivateRedis())
            args.redis_url = stores.redis.url
        elif args.redis_url is None:
            args.redis_url = "redis://127.0.0.1:6379/0"
        result = run(args, stores)
    report(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
