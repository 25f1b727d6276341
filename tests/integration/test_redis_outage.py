"""Redis going away does not stop chat: the rate limiter and the usage counters fall back
to counting in the replica (limits still hold, per replica) and use Redis again once it is
back. A private redis-server on a free port is stopped and started (the shared one on 6379
is left alone)."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from chatapp.errors import RateLimited
from chatapp.ratelimit import RateLimiter
from chatapp.usage.counters import build_counters
from chatapp.usage.ledger import UsageLedger
from chatapp.usage.meter import UsageMeter
from tests.conftest import free_port
from tests.fakes.users import create_user


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        for _ in range(200):  # until it accepts connections
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


async def test_rate_limits_hold_while_redis_is_away(private_redis: PrivateRedis) -> None:
    limiter = RateLimiter(redis_url=private_redis.url, key_prefix="outage:")
    await limiter.hit("2/minute", "user-a")
    private_redis.stop()
    await limiter.hit("2/minute", "user-a")  # no 500: counted in-process
    await limiter.hit("2/minute", "user-a")
    with pytest.raises(RateLimited):
        await limiter.hit("2/minute", "user-a")  # the limit still holds, per replica
    private_redis.start()
    await limiter.hit("2/minute", "user-a")  # Redis again (it restarted empty)
    assert redis.Redis(port=private_redis.port).keys("outage:*")


async def test_usage_holds_and_reply_slots_work_while_redis_is_away(
    private_redis: PrivateRedis, sessionmaker: Any
) -> None:
    async with sessionmaker() as session:
        user = (await create_user(session)).id
    meter = UsageMeter(
        counters=build_counters(private_redis.url, f"outage-{uuid.uuid4().hex[:6]}:"),
        ledger=UsageLedger(sessionmaker=sessionmaker),
        sessionmaker=sessionmaker,
        monthly_tokens=1000,
        token_limit="10000/minute",
        max_concurrent=1,
    )
    try:
        await meter.settle(await meter.begin(user, max_tokens=10), None)
        private_redis.stop()
        held = await meter.begin(user, max_tokens=10)  # no error: counted in-process
        with pytest.raises(RateLimited, match="too many replies at once"):
            await meter.begin(user, max_tokens=10)
        await meter.settle(held, None)
        private_redis.start()
        await meter.settle(await meter.begin(user, max_tokens=10), None)
    finally:
        await meter.aclose()
