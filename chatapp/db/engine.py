"""Database engine, sessions and migrations. Nothing here runs at import time."""

from __future__ import annotations

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


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(settings: DatabaseSettings) -> AsyncEngine:
    """An async engine for `settings`; SQLite gets foreign keys, WAL and a busy timeout."""
    url = settings.resolved_url()
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
