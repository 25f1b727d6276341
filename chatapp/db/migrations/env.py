"""Alembic environment: async engine from ChatApp's DatabaseSettings."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from chatapp.config import DatabaseSettings
from chatapp.db.engine import make_engine
from chatapp.db.models import Base

config = context.config
target_metadata = Base.metadata


def _settings() -> DatabaseSettings:
    settings = config.attributes.get("database_settings")
    return settings if settings is not None else DatabaseSettings()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # One migrator at a time when several processes start together.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(724361001)")
        context.run_migrations()


async def _run_async() -> None:
    engine = make_engine(_settings())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_settings().resolved_url(), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
