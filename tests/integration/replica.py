"""A PostgreSQL primary and a streaming standby of the test's own (the machine's shared
server is left alone): `PrivateReplica(primary)` copies a running `PrivatePostgres` with
``pg_basebackup -R`` (which writes ``primary_conninfo`` and ``standby.signal``) into a
second cluster and starts it on another port. ``initdb`` already allows replication
connections from 127.0.0.1 (its pg_hba.conf has ``host replication all 127.0.0.1/32``
with the cluster's auth method, trust here), and PostgreSQL's defaults (``wal_level=
replica``, ``max_wal_senders=10``) let a primary feed a standby; both are set anyway, in
case a distribution's defaults differ.

`pause_replay` / `resume_replay` hold and release the standby's WAL replay (it still
receives WAL but shows nothing new), which is how the tests make lag on demand.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from tests.cluster.stores import PrivatePostgres


class PrivatePrimary(PrivatePostgres):
    """`PrivatePostgres` configured to feed a standby."""

    def __enter__(self) -> PrivatePrimary:
        super().__enter__()
        conf = self._data / "postgresql.conf"
        hba = self._data / "pg_hba.conf"
        with open(conf, "a") as f:
            f.write("\nwal_level = replica\nmax_wal_senders = 10\n")
        with open(hba, "a") as f:
            f.write("\nhost replication all 127.0.0.1/32 trust\n")
        self.stop()
        self.start()
        return self


class PrivateReplica(PrivatePostgres):
    """A hot standby of `primary`, streaming from it."""

    def __init__(self, primary: PrivatePostgres) -> None:
        super().__init__()
        self.primary = primary

    def __enter__(self) -> PrivateReplica:
        try:
            source = ["-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres"]
            self._run("pg_basebackup", "-R", "-X", "stream", "-D", str(self._data), *source)
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    async def pause_replay(self) -> None:
        await sql(self.url, "SELECT pg_wal_replay_pause()")
        deadline = time.monotonic() + 30
        while await sql(self.url, "SELECT pg_get_wal_replay_pause_state()") != "paused":
            assert time.monotonic() < deadline, "the standby's replay did not pause"
            await asyncio.sleep(0.05)

    async def resume_replay(self) -> None:
        await sql(self.url, "SELECT pg_wal_replay_resume()")

    async def catch_up(self, timeout_s: float = 30) -> None:
        """Wait until the standby has replayed everything the primary wrote so far."""
        target = await sql(self.primary.url, "SELECT pg_current_wal_lsn()::text")
        deadline = time.monotonic() + timeout_s
        check = f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"
        while not await sql(self.url, check):
            assert time.monotonic() < deadline, f"the standby did not reach {target}"
            await asyncio.sleep(0.05)


async def sql(url: str, statement: str, *args: object) -> object:
    """The first column of the first row of `statement` on `url` (None without rows)."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(statement, *args)
    finally:
        await conn.close()
