"""Database engine, sessions and migrations. Nothing here runs at import time."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from chatapp.config import DatabaseSettings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
REPLICA_CONNECT_TIMEOUT_S = 2.0  # then the read goes to the primary
REPLICA_RETRY_AFTER_S = 5.0  # after a failure, reads skip the replica this long

logger = logging.getLogger(__name__)


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(
    settings: DatabaseSettings, *, url: str | None = None, connect_timeout_s: float | None = None
) -> AsyncEngine:
    """An async engine for `settings` (on `url` instead of the primary when given); SQLite
    gets foreign keys, WAL and a busy timeout; PostgreSQL gives up connecting after
    `connect_timeout_s` (asyncpg's 60 s when None)."""
    url = url or settings.resolved_url()
    kwargs: dict[str, Any] = {"echo": settings.echo}
    if _is_sqlite(url):
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(
            pool_size=settings.pool_size,
            max_overflow=settings.pool_size,
            pool_pre_ping=settings.pool_pre_ping,
            pool_recycle=settings.pool_recycle_s,
        )
        if connect_timeout_s is not None:
            kwargs["connect_args"] = {"timeout": connect_timeout_s}
    engine = create_async_engine(url, **kwargs)
    if _is_sqlite(url):

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached right now (down, restarting, a
    connection cut, no pooled connection free in time) rather than that a query is wrong:
    callers answer 503 with Retry-After and the next request tries again."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        ):
            return True
        exc = exc.orig or exc
    if isinstance(exc, sa_exc.TimeoutError | ConnectionError | TimeoutError):
        return True
    # SQLAlchemy's asyncpg adapter raises its own error class (a plain DBAPIError's `orig`)
    # with the SQLSTATE, asyncpg's error as its cause: connection exceptions (08...) and
    # operator intervention (57P01 admin shutdown, 57P03 "the database system is starting
    # up", ...), not 57014 (a statement timeout, a query's own fault)
    if str(getattr(exc, "sqlstate", None) or "").startswith(("08", "57P")):
        return True
    # asyncpg's own: CannotConnectNowError, ConnectionDoesNotExistError, ... (not imported:
    # SQLite setups lack asyncpg), raised as they are or as the adapter's cause
    return any(
        cls.__module__.startswith("asyncpg")
        and cls.__name__ in ("PostgresConnectionError", "CannotConnectNowError", "InterfaceError")
        for error in (exc, exc.__cause__)
        if error is not None
        for cls in type(error).__mro__
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


class ReadSessions:
    """Sessions for reads that tolerate a little replication lag (lists, search, history
    pages, usage reports), opened on the replica when there is one. A replica that cannot
    be reached (`unavailable`) sends the read to the primary instead, and the next reads
    for `retry_after_s` too, so an outage costs one connect timeout, not one per request;
    it is logged once when it starts and once when it ends. Writers never use these: a
    conversation's own turn reads its writes on the primary."""

    def __init__(
        self,
        primary: async_sessionmaker[AsyncSession],
        replica: async_sessionmaker[AsyncSession] | None = None,
        *,
        retry_after_s: float = REPLICA_RETRY_AFTER_S,
    ) -> None:
        self._primary = primary
        self._replica = replica
        self._retry_after_s = retry_after_s
        self._skip_until = 0.0
        self._down = False

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with await self._open() as session:
            yield session

    async def _open(self) -> AsyncSession:
        if self._replica is None or time.monotonic() < self._skip_until:
            return self._primary()
        session = self._replica()
        try:
            await session.connection()  # connects (the replica's pool pings first)
        except BaseException as exc:
            await session.close()
            if not (isinstance(exc, Exception) and unavailable(exc)):
                raise
            self._skip_until = time.monotonic() + self._retry_after_s
            if not self._down:
                self._down = True
                logger.warning(
                    "read replica unreachable (%s: %s): reads go to the primary until it "
                    "answers again",
                    type(exc).__name__,
                    exc,
                )
            return self._primary()
        if self._down:
            self._down = False
            logger.warning("read replica reachable again: reads go to it")
        return session


def make_read_sessions(
    settings: DatabaseSettings, primary: async_sessionmaker[AsyncSession]
) -> ReadSessions:
    """`ReadSessions` on `settings.read_url` (every pooled connection pinged before use, and
    a short connect timeout), or on `primary` alone when no replica is configured."""
    read_url = settings.resolved_read_url()
    if read_url is None:
        return ReadSessions(primary)
    # pinged: a replica restarted or rebuilt must fail at connect, where the read can still
    # go to the primary, not at its first query (a round trip; these reads are off the
    # chat turn's path)
    replica = settings.model_copy(update={"pool_pre_ping": True})
    engine = make_engine(replica, url=read_url, connect_timeout_s=REPLICA_CONNECT_TIMEOUT_S)
    return ReadSessions(primary, make_sessionmaker(engine))


def alembic_config(settings: DatabaseSettings) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["database_settings"] = settings
    return cfg


def migrate(settings: DatabaseSettings, revision: str = "head") -> None:
    """Apply migrations up to `revision` (blocking; call from a thread inside a loop)."""
    if _is_sqlite(settings.resolved_url()):
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), revision)
