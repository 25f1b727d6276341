"""A PostgreSQL and a Redis of the chaos scenario's own, so that its ``postgres`` and
``redis`` faults stop and start them without touching the machine's shared servers (which
other runs use at the same time).

- `PrivatePostgres`: a cluster made by ``initdb`` in a temporary directory, run by
  ``pg_ctl`` on a free port (TCP on 127.0.0.1, its socket in that directory), as the
  ``postgres`` user when this process is root (``initdb`` refuses root); `outage` stops it
  (``pg_ctl stop -m fast``: connections cut, as a restart does), waits, starts it again.
- `PrivateRedis`: ``redis-server`` on a free port, no persistence; `outage` shuts it down
  (``SHUTDOWN NOSAVE``), waits, starts it again on the same port, empty, as a Redis without
  persistence comes back.

Both are context managers: leaving stops the server and removes its files.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bench.procs import free_port


class PrivatePostgres:
    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
        pg_ctl = found[-1] if found else shutil.which("pg_ctl")
        if pg_ctl is None:
            raise RuntimeError("PostgreSQL's server binaries (pg_ctl, initdb) are not installed")
        self._bin = Path(pg_ctl).parent
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._dir = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self._data = self._dir / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self._dir, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.running = False

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        done = subprocess.run(
            [*self._as, str(self._bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    def __enter__(self) -> PrivatePostgres:
        try:
            self._run("initdb", "-D", str(self._data), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--no-sync")  # fmt: skip
            self.start()
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1"
        log = str(self._dir / "postgres.log")
        self._run("pg_ctl", "-D", str(self._data), "-o", options, "-l", log, "-w", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self._data), "-m", mode, "-w", "stop")
        self.running = False

    def outage(self, down_s: float) -> float:
        """Stop (connections cut), stay down `down_s`, start again; the seconds it was down
        (until it accepted connections again)."""
        stopped = time.monotonic()
        self.stop("fast")
        time.sleep(down_s)
        self.start()
        return time.monotonic() - stopped

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


class PrivateRedis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self._binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = Path(tempfile.mkdtemp(prefix="chaos-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(self._dir)]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        client = self._client()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # until it accepts connections
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError("the private redis-server did not start")

    def _client(self) -> redis.Redis:
        # no retries: redis-py's default backoff made SHUTDOWN take ~4.5 s
        return redis.Redis(port=self.port, retry=Retry(NoBackoff(), 0))

    def stop(self) -> None:
        if self._proc is None:
            return
        client = self._client()
        try:
            client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # it closes the connection as it goes
        finally:
            client.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def outage(self, down_s: float) -> float:
        """Shut down, stay down `down_s`, start again on the same port (empty); the seconds
        it was down."""
        stopped = time.monotonic()
        self.stop()
        time.sleep(down_s)
        self.start()
        return time.monotonic() - stopped

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


def _version(path: str) -> tuple[int, ...]:
    part = Path(path).parts[-3]  # /usr/lib/postgresql/<version>/bin/pg_ctl
    return tuple(int(p) for p in part.split(".") if p.isdigit())
