"""Rate limits on sliding windows, shared through Redis when configured (atomic counters,
so a limit holds across replicas) and in-process otherwise. Built on the `limits` library.
Also who the client is (`TrustedProxies`), which per-client limits count by.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Iterable

import limits
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from chatapp.errors import RateLimited


class RateLimiter:
    def __init__(self, *, redis_url: str | None, key_prefix: str) -> None:
        if redis_url:
            uri = "async+" + redis_url
            storage = storage_from_string(
                uri, implementation="redispy", key_prefix=f"{key_prefix}rl"
            )
        else:
            storage = storage_from_string("async+memory://")
        self._limiter = SlidingWindowCounterRateLimiter(storage)

    async def _retry_after(self, item: limits.RateLimitItem, keys: tuple[str, ...]) -> float:
        stats = await self._limiter.get_window_stats(item, *keys)
        return max(1.0, math.ceil(stats.reset_time - time.time()))

    async def hit(self, limit: str, *keys: str, cost: int = 1, what: str = "requests") -> None:
        """Count `cost` against `limit` for `keys`; `RateLimited` (with retry-after) if over."""
        item = limits.parse(limit)
        if not await self._limiter.hit(item, *keys, cost=cost):
            wait = await self._retry_after(item, keys)
            raise RateLimited(
                f"too many {what}: the limit is {limit}; retry in {wait:.0f} s", retry_after=wait
            )

    async def check(self, limit: str, *keys: str, what: str = "requests") -> None:
        """`RateLimited` if `limit` is already used up for `keys` (counts nothing)."""
        item = limits.parse(limit)
        if not await self._limiter.test(item, *keys):
            wait = await self._retry_after(item, keys)
            raise RateLimited(
                f"too many {what}: the limit is {limit}; retry in {wait:.0f} s", retry_after=wait
            )

    async def record(self, limit: str, *keys: str, cost: int) -> None:
        """Count usage that already happened (e.g. tokens of a finished reply)."""
        item = limits.parse(limit)
        if cost > 0 and not await self._limiter.hit(item, *keys, cost=cost):
            # Over the limit: use up what is left, so the next check refuses.
            remaining = (await self._limiter.get_window_stats(item, *keys)).remaining
            if remaining > 0:
                await self._limiter.hit(item, *keys, cost=remaining)

    async def reset(self, limit: str, *keys: str) -> None:
        await self._limiter.clear(limits.parse(limit), *keys)


class TrustedProxies:
    """The client's address: the connection's peer, or, when the peer is one of the named
    proxies (AUTH_TRUSTED_PROXIES, addresses or networks), the nearest address in
    `X-Forwarded-For` that is not a named proxy. Entries left of it were written by the
    client and could be anything, so they are never believed; with no proxies named the
    header is ignored."""

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(n.strip(), strict=False) for n in networks]

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def client(self, peer: str | None, forwarded_for: Iterable[str] = ()) -> str:
        """`peer`: the connection's address; `forwarded_for`: every X-Forwarded-For header."""
        address = peer or "unknown"
        if not self._networks or not self._trusted(address):
            return address
        hops = [h.strip() for header in forwarded_for for h in header.split(",") if h.strip()]
        for hop in reversed(hops):
            address = hop[:64]
            if not self._trusted(address):
                break
        return address
