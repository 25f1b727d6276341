"""CPU of authenticating one request, with and without the per-replica credential cache
(chatapp/auth/credentials.py, issue 11), measured in one run on the same database.

    DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test \\
    REDIS_URL=redis://127.0.0.1:6379/0 python -m bench.auth_cache [--requests 3000]

Baseline: the cache off, i.e. a JWT decode and the user + session SQL query per request
(what every request cost before). Prints this process's CPU per request (the ingress
replica's share; PostgreSQL's own CPU for the query comes on top of the baseline) and the
ratio. Runs in a throw-away database created next to DATABASE_URL's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import timedelta

import asyncpg
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatapp.auth import service
from chatapp.auth.credentials import CredentialCache, Revocations, principal_for_access_token
from chatapp.auth.service import TokenSigner
from chatapp.config import AuthSettings, DatabaseSettings
from chatapp.db.engine import make_engine, make_sessionmaker, migrate

SIGNER = TokenSigner(
    secret="bench-" + "x" * 40,
    issuer="chatapp",
    audience="chatapp-api",
    access_ttl=timedelta(minutes=15),
    refresh_ttl=timedelta(days=1),
)


async def cpu_per_request_ms(
    sessionmaker: async_sessionmaker[AsyncSession], cache: CredentialCache, token: str, n: int
) -> float:
    for _ in range(50):  # warm up: pools, compiled statements, the cache entry
        await principal_for_access_token(
            sessionmaker=sessionmaker, signer=SIGNER, cache=cache, token=token
        )
    start = time.process_time()
    for _ in range(n):
        await principal_for_access_token(
            sessionmaker=sessionmaker, signer=SIGNER, cache=cache, token=token
        )
    return (time.process_time() - start) / n * 1000


async def measure(db_url: str, redis_url: str, n: int) -> None:
    database = DatabaseSettings(url=db_url)
    await asyncio.to_thread(migrate, database)
    engine = make_engine(database)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session:
        user = await service.register_user(
            session=session,
            settings=AuthSettings(),
            email=f"bench-{uuid.uuid4().hex[:8]}@example.com",
            password="correct horse battery staple",
            display_name="",
        )
        token = (
            await service.start_session(session=session, signer=SIGNER, user=user)
        ).access_token
    off = CredentialCache(Revocations(None), ttl_s=60, max_entries=1000)
    revocations = Revocations(
        Redis.from_url(redis_url), key_prefix=f"bench-{uuid.uuid4().hex[:6]}:"
    )
    on = CredentialCache(revocations, ttl_s=60, max_entries=1000)
    baseline = await cpu_per_request_ms(sessionmaker, off, token, n)
    cached = await cpu_per_request_ms(sessionmaker, on, token, n)
    print(f"authenticating one request, {n} requests, CPU of this process:")
    print(f"  no cache (JWT decode + user/session SQL query): {baseline:.3f} ms   (baseline)")
    print(f"  credential cache (one Redis GET):               {cached:.3f} ms")
    ratio = cached / baseline
    print(f"  saved {baseline - cached:.3f} ms per request; cached/baseline = {ratio:.2f}")
    await revocations.aclose()
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    admin_url = os.environ["DATABASE_URL"]
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    name = f"bench_auth_{uuid.uuid4().hex[:8]}"
    dsn = "postgresql://" + admin_url.split("://", 1)[1]

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(measure(admin_url.rsplit("/", 1)[0] + "/" + name, redis_url, args.requests))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
