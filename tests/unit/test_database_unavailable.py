"""Which database errors mean "PostgreSQL cannot be reached right now" (a 503 with
Retry-After) rather than a query's own fault: asyncpg's errors as SQLAlchemy 2.1 hands them
over, a plain `DBAPIError` around the adapter's own error class (the chaos suite's
PostgreSQL restart answered 500 for "the database system is starting up")."""

from __future__ import annotations

import pytest
from sqlalchemy import exc as sa_exc

from chatapp.db.engine import unavailable

asyncpg = pytest.importorskip("asyncpg")


def _as_sqlalchemy_raises_it(error: Exception) -> sa_exc.DBAPIError:
    from sqlalchemy.dialects.postgresql import asyncpg as sa_asyncpg

    dbapi = sa_asyncpg.AsyncAdapt_asyncpg_dbapi(asyncpg)
    try:
        sa_asyncpg.AsyncAdapt_asyncpg_connection._handle_exception_no_connection(dbapi, error)
    except Exception as adapted:
        wrapped = sa_exc.DBAPIError.instance("SELECT 1", None, adapted, dbapi.Error)
        assert isinstance(wrapped, sa_exc.DBAPIError)
        return wrapped
    raise AssertionError("not raised")


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_database_going_away_or_starting_is_unavailable(error: Exception) -> None:
    assert unavailable(_as_sqlalchemy_raises_it(error))


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key value"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_query_s_own_fault_is_not(error: Exception) -> None:
    assert not unavailable(_as_sqlalchemy_raises_it(error))
