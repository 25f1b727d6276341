"""Process supervision and /proc CPU accounting for the benchmarks.

A `Supervisor` starts each system under test in its own session, with a marker
(``CHATAPP_BENCH_RUN=<token>``) in its environment that every process it spawns inherits,
Ray's included. The marker is how the run finds what to measure (`cpu_snapshot`,
`cpu_delta`: cores per process, named by role; `rss_by_process`: their resident memory)
and what to kill (`Supervisor.stop`): never a process the run did not start. Children get
SIGTERM when the benchmark dies, however it dies (`die_with_parent`).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[1]  # the checkout: cwd of the bench's subprocesses
MARKER = "CHATAPP_BENCH_RUN"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- ports & HTTP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_range(width: int) -> int:
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


def wait_http(url: str, deadline: float, proc: subprocess.Popen[bytes] | None) -> bool:
    """Poll `url` until it answers 200 (True), `proc` exits or the monotonic `deadline`
    passes (False)."""
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


# --------------------------------------------------------------------------- CPU accounting


def marked_pids(token: str) -> list[int]:
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


def process_label(pid: int) -> str:
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
    """(all, idle) clock ticks of the whole machine since boot."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals), idle


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    procs: dict[int, tuple[str, int]]  # pid -> (label, CPU ticks)
    machine: tuple[int, int]  # (all, idle) ticks


@dataclass(frozen=True)
class CpuUsage:
    by_process: dict[str, float]  # cores per process label ("label xN" for N alike)
    machine_cores: float  # the whole machine's busy cores


def cpu_snapshot(token: str) -> CpuSnapshot:
    procs = {}
    for pid in marked_pids(token):
        ticks = _cpu_ticks(pid)
        if ticks is not None:
            procs[pid] = (process_label(pid), ticks)
    return CpuSnapshot(time.perf_counter(), procs, _machine_ticks())


def cpu_delta(a: CpuSnapshot, b: CpuSnapshot) -> CpuUsage:
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
    return CpuUsage(by_label, busy / total * NCPU if total else 0.0)


def pg_backend_cpu_s(dbname: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving database `dbname` on this
    machine (a backend retitles itself "postgres: [CLUSTER:] USER DBNAME HOST(PORT) STATE")."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].split()
        except OSError:
            continue
        if title[:1] == [b"postgres:"] and dbname.encode() in title[1:4]:
            ticks = _cpu_ticks(int(entry))
            if ticks is not None:
                out[int(entry)] = ticks / CLK_TCK
    return out


def _rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def rss_by_process(token: str) -> dict[str, int]:
    """Resident memory (bytes) per process label of the marked processes, named as
    `cpu_delta` names them ("label xN": the sum of N alike)."""
    sizes: list[tuple[str, int]] = []
    for pid in marked_pids(token):
        rss = _rss_bytes(pid)
        if rss is not None:
            sizes.append((process_label(pid), rss))
    count: dict[str, int] = {}
    for label, _ in sizes:
        count[label] = count.get(label, 0) + 1
    out: dict[str, int] = {}
    for label, rss in sizes:
        key = label if count[label] == 1 else f"{label} x{count[label]}"
        out[key] = out.get(key, 0) + rss
    return out


# --------------------------------------------------------------------------- supervision


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it when this script dies, however it dies (Ray's own
    processes share the fate of the `chatapp run` that started them)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def child_env(token: str, extra: dict[str, str]) -> dict[str, str]:
    """This environment with the marker, less any Ray address or Serve flag of ours (a
    system under test gets only the flags it is given in `extra`)."""
    env = dict(os.environ)
    for name in list(env):
        if name == "RAY_ADDRESS" or name.startswith("RAY_SERVE_"):
            del env[name]
    env.update({MARKER: token, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def log_tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@dataclass
class Server:
    """A started system under test: its process, marker token, log and base URLs by
    endpoint ("uvicorn", "proxy", "direct"), and the headers its API needs."""

    name: str
    proc: subprocess.Popen[bytes]
    token: str
    log: Path
    urls: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


class Supervisor:
    """Starts servers in subprocesses and stops each, with everything it spawned; on exit
    (or `stop_all`) whatever is still running."""

    def __init__(self) -> None:
        self._started: list[Server] = []

    def start(
        self,
        name: str,
        cmd: list[str],
        *,
        cwd: Path,
        log: Path,
        health_url: str,
        timeout_s: float,
        env: dict[str, str] | None = None,
    ) -> Server:
        """Run `cmd` (output to `log`) and wait until `health_url` answers 200; raise
        RuntimeError with the log's tail if it exits or `timeout_s` passes first. The server
        stays supervised either way."""
        token = uuid.uuid4().hex
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=cwd, env=child_env(token, env or {}), stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip
        server = Server(name, proc, token, log)
        self._started.append(server)
        if not wait_http(health_url, time.monotonic() + timeout_s, proc):
            raise RuntimeError(f"{name} did not start; see {log}:\n{log_tail(log)}")
        return server

    def stop(self, server: Server, grace_s: float = 20.0) -> None:
        """SIGTERM the process we started (ChatApp shuts Serve and its own Ray down), then
        SIGKILL whatever still carries its marker. Never touches other processes."""
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(grace_s)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = [p for p in marked_pids(server.token) if p != os.getpid()]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(5)
        if server in self._started:
            self._started.remove(server)

    def stop_all(self) -> None:
        for server in list(self._started):
            self.stop(server)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
