"""PostgreSQL's client tools as `chatapp backup` / `chatapp restore` run them: the
connection from DATABASE_URL in libpq's environment variables (the password never on a
command line, never in a message), finding the tools, their version against the server's,
and running them."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from chatapp.errors import BackupError

_PG_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


@dataclass(frozen=True, slots=True)
class Postgres:
    """Connection parameters for libpq's tools, from DATABASE_URL."""

    url: URL

    @property
    def dbname(self) -> str:
        return self.url.database or self.url.username or "postgres"

    def describe(self) -> str:
        host = self.url.host or self.url.query.get("host") or "localhost"
        return f"PostgreSQL database {self.dbname!r} at {host}:{self.url.port or 5432}"

    def env(self) -> dict[str, str]:
        """The child's environment: ours (PGSSLROOTCERT and the like still apply) with
        the connection in libpq's variables, the password among them: a command line
        is visible to every process on the machine, an environment is not."""
        env = dict(os.environ)
        host = self.url.host or self.url.query.get("host")
        values = {
            "PGHOST": host if isinstance(host, str) else None,
            "PGPORT": str(self.url.port) if self.url.port else None,
            "PGUSER": self.url.username,
            "PGPASSWORD": self.url.password,
            "PGDATABASE": self.dbname,
            "PGSSLMODE": self._sslmode(),
            "PGCONNECT_TIMEOUT": "30",
            "PGAPPNAME": "chatapp-backup",
        }
        env.update({k: v for k, v in values.items() if v})
        return env

    def _sslmode(self) -> str | None:
        mode = self.url.query.get("sslmode") or self.url.query.get("ssl")
        if not isinstance(mode, str):
            return None
        mode = mode.lower()
        return "require" if mode in ("true", "1", "on") else mode if mode in _PG_SSLMODES else None

    def scrub(self, message: str) -> str:
        password = self.url.password
        return message.replace(password, "***") if password else message


def find_tool(name: str, pg_bin: Path | None) -> str:
    found = shutil.which(name, path=str(pg_bin) if pg_bin is not None else None)
    if found is None:
        where = f"in {pg_bin}" if pg_bin is not None else "on PATH"
        raise BackupError(
            f"{name} not found {where}: install PostgreSQL's client tools, of the server's "
            "major version or newer (Debian/Ubuntu: apt-get install postgresql-client), or "
            "name their folder with --pg-bin"
        )
    return found


async def run(argv: list[str], pg: Postgres) -> tuple[int, str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=pg.env(),
        )
    except OSError as exc:
        raise BackupError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), pg.scrub(err.decode(errors="replace"))


async def client_major(tool: str, pg: Postgres) -> int:
    code, out, err = await run([tool, "--version"], pg)
    found = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    if code != 0 or found is None:
        raise BackupError(f"{tool} --version did not answer as PostgreSQL's tool: {err or out}")
    return int(found.group(1))


def check_versions(tool: str, client: int, server: int | None, pg: Postgres) -> None:
    if server is not None and server > client:
        name = Path(tool).name
        raise BackupError(
            f"{name} is version {client}, older than the server ({pg.describe()} runs "
            f"PostgreSQL {server}): install the client tools of version {server} or newer "
            f"(postgresql-client-{server}), or name their folder with --pg-bin"
        )


def last_lines(stderr: str, n: int = 6) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return "\n".join(lines[-n:]) or "no message"


def conninfo_value(value: str) -> str:
    """`value` quoted for a libpq connection string (a database name is not parsed as one)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
