"""Backups of ChatApp's database and their restore (`chatapp backup` / `chatapp restore`).

PostgreSQL: ``pg_dump --format=custom`` into a file; ``pg_restore --clean --if-exists
--single-transaction`` back, so a restore either replaces the dumped objects whole or
leaves the database as it was. The client tools must be at least as new as the server.
The connection's password reaches them in ``PGPASSWORD``, never on their command line,
and never appears in a message.

SQLite: the online backup API (`sqlite3.Connection.backup`) both ways, so the database
of a running service is copied consistently.

A backup is written under a temporary name beside its final one and renamed into place
once complete: a failed or interrupted backup never leaves a file under the final name.
A restore refuses a database that holds data unless told to replace it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, table, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from chatapp.config import DatabaseSettings
from chatapp.db.engine import alembic_config, make_engine
from chatapp.db.models import Base
from chatapp.errors import BackupError
from chatapp.pgtools import (
    Postgres,
    check_versions,
    client_major,
    conninfo_value,
    find_tool,
    last_lines,
    run,
)

Backend = Literal["postgresql", "sqlite"]
# what `backup(..., keep=N)` may delete in a folder: the names it writes there, only
BACKUP_NAME = re.compile(r"^chatapp-\d{8}T\d{6}Z\.(dump|sqlite3)$")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_PG_MAGIC = b"PGDMP"


@dataclass(frozen=True, slots=True)
class BackupDone:
    path: Path
    backend: Backend
    database: str  # where it came from, without credentials
    size_bytes: int
    seconds: float
    removed: tuple[Path, ...] = ()  # older backups removed to keep the newest N


@dataclass(frozen=True, slots=True)
class RestoreDone:
    path: Path
    backend: Backend
    database: str
    seconds: float
    revision: str | None  # the restored schema's migration
    head: str | None  # this version's newest migration: `chatapp migrate` when they differ


@dataclass(frozen=True, slots=True)
class _Facts:
    """What a restore or backup needs to know about the configured database."""

    server_major: int | None  # PostgreSQL only
    tables_with_rows: tuple[str, ...]
    revision: str | None


# -- the database's address ------------------------------------------------------------


def _backend(settings: DatabaseSettings) -> tuple[Backend, URL]:
    url = make_url(settings.resolved_url())
    if url.get_backend_name() == "postgresql":
        return "postgresql", url
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            raise BackupError("DATABASE_URL names no SQLite file (in memory, or a file: URI)")
        return "sqlite", url
    raise BackupError(f"cannot back up a {url.get_backend_name()} database (PostgreSQL or SQLite)")


def _sqlite_file(url: URL) -> Path:
    assert url.database is not None
    return Path(url.database).resolve()


# -- what the database holds -----------------------------------------------------------


async def _facts(settings: DatabaseSettings, where: str, scrub: Postgres | None) -> _Facts:
    engine = make_engine(settings)
    try:
        async with engine.connect() as conn:
            server_major = None
            if conn.dialect.name == "postgresql":
                number = await conn.scalar(text("SHOW server_version_num"))
                server_major = int(number) // 10_000
            present = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            full = []
            for name in sorted(present & set(Base.metadata.tables)):
                probe = select(text("1")).select_from(table(name)).limit(1)
                if await conn.scalar(probe) is not None:
                    full.append(name)
            revision = None
            if "alembic_version" in present:
                revision = await conn.scalar(text("SELECT version_num FROM alembic_version"))
            return _Facts(server_major, tuple(full), revision)
    except (SQLAlchemyError, OSError) as exc:
        reason = str(exc.orig) if isinstance(exc, DBAPIError) and exc.orig else str(exc)
        reason = reason.splitlines()[0] if reason else type(exc).__name__
        if scrub is not None:
            reason = scrub.scrub(reason)
        raise BackupError(f"cannot read the {where}: {reason}") from None
    finally:
        await engine.dispose()


def _head(settings: DatabaseSettings) -> str | None:
    return ScriptDirectory.from_config(alembic_config(settings)).get_current_head()


# -- files -----------------------------------------------------------------------------


def _target(path: Path, backend: Backend, keep: int | None) -> Path:
    """The file a backup goes to: `path`, or a new timestamped name when it is a folder
    (the only place `keep` applies)."""
    if keep is not None and (keep < 1 or not path.is_dir()):
        raise BackupError("--keep needs a folder to back up into and a count of 1 or more")
    if path.is_dir():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return path / f"chatapp-{stamp}.{'dump' if backend == 'postgresql' else 'sqlite3'}"
    if not path.parent.is_dir():
        raise BackupError(f"folder {path.parent} does not exist: create it first")
    return path


@contextlib.contextmanager
def _staged(final: Path) -> Iterator[Path]:
    """A temporary file beside `final` (mode 0600: a backup holds every account), moved to
    `final` when the block ends without error and removed when it does not."""
    try:
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    except OSError as exc:
        raise BackupError(f"cannot write in {final.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    staged = Path(name)
    try:
        yield staged
        if staged.stat().st_size == 0:
            raise BackupError("the backup came out empty; nothing was written")
        with open(staged, "rb") as written:
            os.fsync(written.fileno())
        os.replace(staged, final)
        with contextlib.suppress(OSError):  # make the rename itself durable
            folder = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except OSError as exc:
        raise BackupError(f"cannot write {final}: {exc.strerror or exc}") from None
    finally:
        staged.unlink(missing_ok=True)


def _prune(folder: Path, keep: int) -> tuple[Path, ...]:
    """Delete all but the newest `keep` of the backups this module wrote in `folder`."""
    ours = sorted(p for p in folder.iterdir() if BACKUP_NAME.match(p.name) and p.is_file())
    old = ours[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
    return tuple(old)


def _kind_of_file(path: Path) -> Backend | None:
    if not path.is_file():
        raise BackupError(f"no backup at {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head.startswith(_SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(_PG_MAGIC):
        return "postgresql"
    return None


# -- PostgreSQL ------------------------------------------------------------------------


async def _pg_backup(settings: DatabaseSettings, url: URL, final: Path, pg_bin: Path | None) -> str:
    pg = Postgres(url)
    tool = find_tool("pg_dump", pg_bin)
    client = await client_major(tool, pg)
    facts = await _facts(settings, pg.describe(), pg)
    check_versions(tool, client, facts.server_major, pg)
    with _staged(final) as staged:
        code, _, err = await run([tool, "--format=custom", "--no-password", f"--file={staged}"], pg)
        if code != 0:
            raise BackupError(
                f"pg_dump failed (exit {code}); no backup written:\n{last_lines(err)}"
            )
    return pg.describe()


async def _pg_restore(
    settings: DatabaseSettings, url: URL, source: Path, *, force: bool, pg_bin: Path | None
) -> tuple[str, str | None]:
    pg = Postgres(url)
    tool = find_tool("pg_restore", pg_bin)
    client = await client_major(tool, pg)
    code, listing, err = await run([tool, "--list", str(source)], pg)
    if code != 0:
        raise BackupError(
            f"{source} is not a backup pg_restore {client} can read:\n{last_lines(err)}"
        )
    if not re.search(r"\bTABLE( DATA)? \S+ alembic_version\b", listing):
        raise BackupError(f"{source} is a PostgreSQL dump but not of a ChatApp database")
    facts = await _facts(settings, pg.describe(), pg)
    check_versions(tool, client, facts.server_major, pg)
    _refuse_data(facts, pg.describe(), force)
    # objects owned by (and granted as) the restoring user: the roles of the dumped
    # cluster need not exist here
    argv = [tool, "--clean", "--if-exists", "--single-transaction", "--exit-on-error",
            "--no-owner", "--no-privileges", "--no-password",
            f"--dbname=dbname={conninfo_value(pg.dbname)}", str(source)]  # fmt: skip
    code, _, err = await run(argv, pg)
    if code != 0:
        raise BackupError(
            f"pg_restore failed (exit {code}); the database was left as it was:\n{last_lines(err)}"
        )
    after = await _facts(settings, pg.describe(), pg)
    return pg.describe(), after.revision


def _refuse_data(facts: _Facts, where: str, force: bool) -> None:
    if facts.tables_with_rows and not force:
        raise BackupError(
            f"the {where} holds data ({', '.join(facts.tables_with_rows)}): restoring would "
            "replace it. Restore into an empty database, or pass --force to replace it"
        )


# -- SQLite ----------------------------------------------------------------------------


def _sqlite_connect(path: Path, mode: Literal["ro", "rw", "rwc"]) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True, timeout=30)


def _sqlite_backup(database: Path, staged: Path) -> None:
    if not database.is_file():
        raise BackupError(f"no SQLite database at {database}: nothing to back up")
    try:
        with closing(_sqlite_connect(database, "rw")) as source:
            with closing(sqlite3.connect(staged)) as copy:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite backup of {database} failed: {exc}") from None


def _sqlite_revision_of_backup(source: Path) -> str:
    try:
        with closing(_sqlite_connect(source, "ro")) as backup:
            (check,) = backup.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise BackupError(f"{source} is a damaged SQLite database: {check}")
            row = backup.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error as exc:
        raise BackupError(f"{source} is not a SQLite backup of ChatApp: {exc}") from None
    return str(row[0]) if row else ""


def _sqlite_restore(source: Path, database: Path) -> None:
    database.parent.mkdir(parents=True, exist_ok=True)
    try:
        with closing(_sqlite_connect(source, "ro")) as backup:
            with closing(_sqlite_connect(database, "rwc")) as target:
                backup.backup(target)
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite restore into {database} failed: {exc}") from None


# -- the two commands ------------------------------------------------------------------


async def backup(
    settings: DatabaseSettings,
    path: Path,
    *,
    keep: int | None = None,
    pg_bin: Path | None = None,
) -> BackupDone:
    """Back the configured database up to `path` (a file, or a folder to put a new
    timestamped file in); with `keep`, only the newest `keep` backups stay in that folder.
    `pg_bin`: the folder of pg_dump (default: PATH)."""
    started = time.monotonic()
    backend, url = _backend(settings)
    final = _target(path, backend, keep)
    if backend == "postgresql":
        where = await _pg_backup(settings, url, final, pg_bin)
    else:
        database = _sqlite_file(url)
        where = f"SQLite database {database}"
        with _staged(final) as staged:
            await asyncio.to_thread(_sqlite_backup, database, staged)
    removed = _prune(final.parent, keep) if keep is not None else ()
    return BackupDone(
        path=final,
        backend=backend,
        database=where,
        size_bytes=final.stat().st_size,
        seconds=time.monotonic() - started,
        removed=removed,
    )


async def restore(
    settings: DatabaseSettings,
    path: Path,
    *,
    force: bool = False,
    pg_bin: Path | None = None,
) -> RestoreDone:
    """Restore the backup at `path` into the configured database: refused when that
    database holds data, unless `force` (then what it holds is replaced)."""
    started = time.monotonic()
    backend, url = _backend(settings)
    kind = _kind_of_file(path)
    if kind is None:
        raise BackupError(f"{path} is neither a pg_dump custom-format file nor a SQLite file")
    if kind != backend:
        raise BackupError(f"{path} is a {kind} backup, but DATABASE_URL names a {backend} database")
    if backend == "postgresql":
        where, revision = await _pg_restore(settings, url, path, force=force, pg_bin=pg_bin)
    else:
        database = _sqlite_file(url)
        where = f"SQLite database {database}"
        revision = await asyncio.to_thread(_sqlite_revision_of_backup, path)
        if database.exists():
            _refuse_data(await _facts(settings, where, None), where, force)
        await asyncio.to_thread(_sqlite_restore, path, database)
    return RestoreDone(
        path=path,
        backend=backend,
        database=where,
        seconds=time.monotonic() - started,
        revision=revision or None,
        head=_head(settings),
    )
