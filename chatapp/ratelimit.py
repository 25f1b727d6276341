"""Rate limits on sliding windows, shared through Redis when configured (atomic counters,
so a limit holds across replicas) and in-process otherwise. Built on the `limits` library.
Also who the client is (`TrustedProxies`), which per-client limits count by.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Iterable

import limits
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from chatapp.errors import RateLimited

logger = logging.getLogger(__name__)


class RateLimiter:
    """Sliding-window limits. With Redis, a Redis that cannot be reached does not fail the
    request: the replica counts in-process until Redis answers again (each replica then
    enforces its own share only; a warning is logged)."""

    def __init__(self, *, redis_url: str | None, key_prefix: str) -> None:
        memory = SlidingWindowCounterRateLimiter(storage_from_string("async+memory://"))
        self._fallback: SlidingWindowCounterRateLimiter | None = None
        if redis_url:
            storage = storage_from_string(
                "async+" + redis_url, implementation="redispy", key_prefix=f"{key_prefix}rl"
            )
            self._limiter = SlidingWindowCounterRateLimiter(storage)
            self._fallback = memory
        else:
            self._limiter = memory

    async def _hit(self, item: limits.RateLimitItem, keys: tuple[str, ...], cost: int) -> bool:
        """Whether `cost` more fits under `item` for `keys` (and is counted)."""
        try:
            return await self._limiter.hit(item, *keys, cost=cost)
        except Exception as exc:  # Redis away: count here meanwhile
            if self._fallback is None:
                raise
            _warn_once(exc)
            return await self._fallback.hit(item, *keys, cost=cost)

    async def _retry_after(self, item: limits.RateLimitItem, keys: tuple[str, ...]) -> float:
        try:
            stats = await self._limiter.get_window_stats(item, *keys)
        except Exception:
            if self._fallback is None:
                raise
            stats = await self._fallback.get_window_stats(item, *keys)
        return max(1.0, math.ceil(stats.reset_time - time.time()))

    async def hit(self, limit: str, *keys: str, cost: int = 1, what: str = "requests") -> None:
        """Count `cost` against `limit` for `keys`; `RateLimited` (with retry-after) if over."""
        item = limits.parse(limit)
        if not await self._hit(item, keys, cost):
            wait = await self._retry_after(item, keys)
            raise RateLimited(
                f"too many {what}: the limit is {limit}; retry in {wait:.0f} s",
                retry_after=wait,
                limit=what,
            )

    async def reset(self, limit: str, *keys: str) -> None:
        item = limits.parse(limit)
        if self._fallback is not None:
            await self._fallback.clear(item, *keys)
        try:
            await self._limiter.clear(item, *keys)
        except Exception as exc:
            if self._fallback is None:
                raise
            _warn_once(exc)


_warned_at = 0.0


def _warn_once(exc: BaseException) -> None:
    """One warning a minute while Redis is away, not one per request."""
    global _warned_at
    now = time.monotonic()
    if now - _warned_at >= 60:
        _warned_at = now
        logger.warning("rate limits: Redis unreachable (%s); counting in-process meanwhile", exc)


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
