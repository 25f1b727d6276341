"""Readiness: whether this replica can serve, dependency by dependency (GET /readyz).

Each check is a probe (an awaitable that raises when the dependency is not usable) run
with its own time limit; all run at once, so the answer comes within about one limit
even when a dependency hangs. A check is *required* (its failure means "not ready",
503) or not (its failure means "degraded", still 200: ChatApp keeps answering without
it). Which are required is `ReadinessSettings.required`.

What a failing check says is safe to show anyone (the route needs no login): ChatApp's
own message, "no answer within N s", or the error's class name; never the exception's
text, which may carry addresses, user names or URLs. The full error is logged.

The checks ChatApp runs (`readiness_checker`):

- `database`: `SELECT 1` on a connection of its own (not from the request pool, so a
  busy pool does not read as a database that is down);
- `redis` (when REDIS_URL is set): PING;
- `models`: the model router answers (its catalog);
- `knowledge_base` (when RAG is on): the retrieval deployment answers and serves the
  default knowledge base (unless its RAG mode is off).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from chatapp.chat.ports import Retriever
from chatapp.config import RagSettings, Settings
from chatapp.errors import ChatAppError

logger = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[None]]
Status = Literal["ready", "degraded", "not_ready"]
RETRY_AFTER_S = 5


class NotReady(Exception):
    """A probe's dependency answered, but cannot serve; the message is shown as is."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    required: bool
    duration_ms: float
    reason: str | None = None

    def public(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "ok" if self.ok else "failing",
            "required": self.required,
            "duration_ms": self.duration_ms,
        }
        if self.reason is not None:
            body["reason"] = self.reason
        return body


@dataclass(frozen=True, slots=True)
class Readiness:
    checks: Mapping[str, CheckResult]

    @property
    def status(self) -> Status:
        if any(c.required and not c.ok for c in self.checks.values()):
            return "not_ready"
        if any(not c.ok for c in self.checks.values()):
            return "degraded"
        return "ready"

    @property
    def ready(self) -> bool:
        """Whether the replica should take traffic (every required check passes)."""
        return self.status != "not_ready"

    def public(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "checks": {name: check.public() for name, check in self.checks.items()},
        }


def _reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, ChatAppError):
        return exc.message
    if isinstance(exc, NotReady):
        return str(exc)
    return f"failed ({type(exc).__name__})"


class ReadinessChecker:
    """Runs `probes` at once, each within `timeout_s`; a result is reused for `cache_s`
    and concurrent callers share one run."""

    def __init__(
        self,
        probes: Mapping[str, Probe],
        *,
        required: Collection[str],
        timeout_s: float,
        cache_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probes = dict(probes)
        self._required = frozenset(required)
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._clock = clock
        self._last: tuple[float, Readiness] | None = None
        self._running: asyncio.Task[Readiness] | None = None

    async def check(self) -> Readiness:
        if self._last is not None and self._clock() - self._last[0] < self._cache_s:
            return self._last[1]
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._run_all())
            self._running.add_done_callback(self._finished)
        # Shielded: a caller that goes away does not cancel the others' run.
        return await asyncio.shield(self._running)

    def _finished(self, task: asyncio.Task[Readiness]) -> None:
        self._running = None
        if not task.cancelled() and task.exception() is None:
            self._last = (self._clock(), task.result())

    async def _run_all(self) -> Readiness:
        names = list(self._probes)
        results = await asyncio.gather(*(self._run(name) for name in names))
        return Readiness(dict(zip(names, results, strict=True)))

    async def _run(self, name: str) -> CheckResult:
        started = time.perf_counter()
        required = name in self._required
        try:
            await asyncio.wait_for(self._probes[name](), self._timeout_s)
        except Exception as exc:
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            return CheckResult(False, required, duration_ms, _reason(exc, self._timeout_s))
        return CheckResult(True, required, round((time.perf_counter() - started) * 1000, 1))


def database_probe(engine: AsyncEngine) -> Probe:
    async def probe() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    return probe


def redis_probe(client: Redis) -> Probe:
    async def probe() -> None:
        await client.ping()

    return probe


def models_probe(models: Callable[[], Awaitable[list[dict[str, Any]]]]) -> Probe:
    async def probe() -> None:
        if not await models():
            raise NotReady("the model router has no model to answer with")

    return probe


def knowledge_base_probe(retriever: Retriever, rag: RagSettings) -> Probe:
    async def probe() -> None:
        served = {kb.id for kb in await retriever.knowledge_bases()}
        if rag.mode_of(rag.default_kb) != "off" and rag.default_kb not in served:
            raise NotReady(f"the default knowledge base {rag.default_kb!r} is not loaded")

    return probe


def readiness_checker(
    settings: Settings,
    *,
    models: Callable[[], Awaitable[list[dict[str, Any]]]],
    retriever: Retriever | None,
) -> ReadinessChecker:
    """ChatApp's checks for `settings` (see the module)."""
    ready = settings.readiness
    # A connection per probe, opened and closed: probes are few (`cache_s`), and a pool
    # shared with requests would report a busy replica as a database that is down.
    engine = create_async_engine(settings.database.resolved_url(), poolclass=NullPool)
    probes: dict[str, Probe] = {"database": database_probe(engine)}
    if settings.redis.url:
        # The check's own limit cuts a hung PING; the client's are a backstop behind it.
        client = Redis.from_url(
            settings.redis.url,
            socket_connect_timeout=2 * ready.timeout_s,
            socket_timeout=2 * ready.timeout_s,
        )
        probes["redis"] = redis_probe(client)
    probes["models"] = models_probe(models)
    if retriever is not None:
        probes["knowledge_base"] = knowledge_base_probe(retriever, settings.rag)
    return ReadinessChecker(
        probes, required=ready.required, timeout_s=ready.timeout_s, cache_s=ready.cache_s
    )
