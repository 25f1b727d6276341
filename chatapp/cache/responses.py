"""Exact-match response cache.

The key is a hash of the model asked for, the normalised messages (their images, tool
calls and tool results included) and the sampling parameters (and the user, in per-user
scope), so only the very same request is answered from it: multi-turn chats never get a
stale answer meant for another context. Redis (`redis.asyncio`) when configured, so every
router replica shares it; in-process otherwise.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import logging
import re
import time
import unicodedata
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

from chatapp.config import CacheSettings, RedisSettings
from chatapp.llm.base import ChatMessage, Finish, SamplingParams, TextDelta

logger = logging.getLogger(__name__)

# How a request uses the cache: "auto" only at temperature 0, "on" always, "off" never.
CacheMode = Literal["auto", "on", "off"]


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    provider: str
    stop_sequence: str | None = None


_PIECES = re.compile(r"\S+\s*|\s+")


def answer_of(parts: list[str], finish: Finish) -> CachedAnswer:
    """What the cache keeps of a text answer."""
    return CachedAnswer(
        text="".join(parts),
        finish_reason=finish.finish_reason,
        prompt_tokens=finish.prompt_tokens,
        completion_tokens=finish.completion_tokens,
        model=finish.model,
        provider=finish.provider,
        stop_sequence=finish.stop_sequence,
    )


async def replay(hit: CachedAnswer) -> AsyncIterator[TextDelta | Finish]:
    """A cached answer streams like a fresh one (word by word), marked cached, free."""
    for piece in _PIECES.findall(hit.text):
        yield TextDelta(piece)
    yield replay_finish(hit)


def replay_finish(hit: CachedAnswer) -> Finish:
    return Finish(
        finish_reason=hit.finish_reason,
        prompt_tokens=hit.prompt_tokens,
        completion_tokens=hit.completion_tokens,
        model=hit.model,
        provider=hit.provider,
        cost_usd=0.0,
        cached=True,
        stop_sequence=hit.stop_sequence,
    )


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def _message_key(m: ChatMessage) -> list[object]:
    """Role and text; then whatever else the message holds (a text-only message's key is
    what it always was)."""
    key: list[object] = [m.role, _normalise(m.content)]
    if m.parts or m.tool_calls or m.tool_call_id:
        key.append([[type(p).__name__, *dataclasses.astuple(p)] for p in m.parts])
        key.append([dataclasses.astuple(c) for c in m.tool_calls])
        key.append(m.tool_call_id)
    return key


def cache_key(
    *,
    model: str,
    messages: Sequence[ChatMessage],
    params: SamplingParams,
    user: str | None,
) -> str:
    """Stable across processes; whitespace and Unicode form do not matter."""
    payload = {
        "model": model,
        "messages": [_message_key(m) for m in messages],
        "params": dataclasses.asdict(dataclasses.replace(params, whole=False)),
        "user": user,
    }
    raw = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=list)
    return hashlib.sha256(raw.encode()).hexdigest()


class ResponseCache(abc.ABC):
    @abc.abstractmethod
    async def get(self, key: str) -> CachedAnswer | None: ...

    @abc.abstractmethod
    async def set(self, key: str, answer: CachedAnswer) -> None: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryResponseCache(ResponseCache):
    """One process's LRU with a TTL."""

    def __init__(self, *, ttl_s: float, max_entries: int) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._items: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()

    async def get(self, key: str) -> CachedAnswer | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, answer = item
        if expires < time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return answer

    async def set(self, key: str, answer: CachedAnswer) -> None:
        self._items[key] = (time.monotonic() + self._ttl_s, answer)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)


class RedisResponseCache(ResponseCache):
    """Shared by every replica; a Redis outage degrades to misses, never to errors."""

    def __init__(self, *, url: str, key_prefix: str, ttl_s: int) -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._prefix = f"{key_prefix}cache:"
        self._ttl_s = ttl_s

    async def get(self, key: str) -> CachedAnswer | None:
        try:
            raw = await self._redis.get(self._prefix + key)
        except Exception as exc:  # redis errors, timeouts
            logger.warning("response cache read failed: %s", type(exc).__name__)
            return None
        if raw is None:
            return None
        try:
            return CachedAnswer(**json.loads(raw))
        except (ValueError, TypeError):
            return None

    async def set(self, key: str, answer: CachedAnswer) -> None:
        try:
            await self._redis.set(
                self._prefix + key, json.dumps(dataclasses.asdict(answer)), ex=self._ttl_s
            )
        except Exception as exc:
            logger.warning("response cache write failed: %s", type(exc).__name__)

    async def aclose(self) -> None:
        await self._redis.aclose()


def build_response_cache(cache: CacheSettings, redis: RedisSettings) -> ResponseCache | None:
    if not cache.enabled:
        return None
    if redis.url:
        return RedisResponseCache(url=redis.url, key_prefix=redis.key_prefix, ttl_s=cache.ttl_s)
    return MemoryResponseCache(ttl_s=cache.ttl_s, max_entries=cache.max_entries)
