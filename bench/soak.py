"""What the user soak (`bench/users.py`) makes before timing: ChatApp settings for it,
accounts (through the HTTP API or the core), conversations and a seeded long history; and
the long-history turn timing.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.openloop import streamed_turn
from bench.procs import (
    NCPU,
    ROOT,
)


def soak_overrides(
    fields: dict[str, list[str]], *, redis_url: str, redis_prefix: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """ChatApp settings of the soak where the checkout's Settings (`fields`) has them, then
    `extra`: a signing secret the core's account maker shares, access tokens that outlive
    the run, Redis under the run's own key prefix."""
    wanted: dict[str, Any] = {
        "secret_key": secrets.token_urlsafe(48),
        "auth": {"access_token_ttl_s": 7 * 24 * 3600},
        "redis": {"url": redis_url, "key_prefix": redis_prefix},
    }
    out: dict[str, Any] = {}
    for section, values in wanted.items():
        if section not in fields:
            print(f"note: this checkout's settings have no {section!r}", flush=True)
        elif isinstance(values, dict):
            out[section] = {k: v for k, v in values.items() if k in fields[section]}
        else:
            out[section] = values
    for section, values in extra.items():
        if isinstance(values, dict) and isinstance(out.get(section), dict):
            out[section] = {**out[section], **values}
        else:
            out[section] = values
    return out


@dataclass(frozen=True)
class Account:
    email: str
    user_id: str
    access_token: str
    conversation_id: str = ""


def _jwt_subject(token: str) -> str:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])


# --------------------------------------------------------------------------- through HTTP


async def _api_accounts(
    base: str, emails: list[str], password: str, concurrency: int, odd: dict[str, int]
) -> list[Account]:
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    done = 0
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def log_in(email: str) -> str:
            form = {"grant_type": "password", "username": email, "password": password}
            for attempt in range(3):
                async with session.post(f"{base}/api/auth/token", data=form) as r:
                    if r.status == 200:
                        return str((await r.json())["access_token"])
                    if r.status != 401 or attempt == 2:
                        raise RuntimeError(f"log in {email}: HTTP {r.status}: {await r.text()}")
                odd["login 401 right after registering, retried"] += 1
                await asyncio.sleep(1)
            raise AssertionError("unreachable")

        async def one(email: str) -> Account:
            nonlocal done
            async with gate:
                body = {"email": email, "password": password}
                async with session.post(f"{base}/api/auth/register", json=body) as r:
                    if r.status == 409:  # a kept database, or a request the server ran twice
                        odd["register 409 (the account existed)"] += 1
                    elif r.status != 201:
                        raise RuntimeError(f"register {email}: HTTP {r.status}: {await r.text()}")
                token = await log_in(email)
            done += 1
            if done % max(1, len(emails) // 10) == 0:
                print(f"    {done}/{len(emails)} accounts", flush=True)
            return Account(email, _jwt_subject(token), token)

        return list(await asyncio.gather(*(one(e) for e in emails)))


def api_accounts(
    base: str, emails: list[str], password: str, concurrency: int
) -> tuple[list[Account], dict[str, int]]:
    """Register and log in each email through the HTTP API, `concurrency` at a time; and
    the count of each oddity met (answers a fresh account should not get)."""
    odd: dict[str, int] = collections.defaultdict(int)
    accounts = asyncio.run(_api_accounts(base, emails, password, concurrency, odd))
    return accounts, dict(odd)


async def _create_conversations(
    base: str, accounts: list[Account], concurrency: int
) -> list[Account]:
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def one(account: Account) -> Account:
            async with gate:
                headers = {"Authorization": f"Bearer {account.access_token}"}
                body = {"title": "soak"}
                url = f"{base}/api/conversations"
                async with session.post(url, json=body, headers=headers) as r:
                    if r.status != 201:
                        raise RuntimeError(
                            f"create conversation: HTTP {r.status}: {await r.text()}"
                        )
                    return replace(account, conversation_id=str((await r.json())["id"]))

        return list(await asyncio.gather(*(one(a) for a in accounts)))


def create_conversations(base: str, accounts: list[Account], concurrency: int) -> list[Account]:
    """A new conversation for each account, through the HTTP API."""
    return asyncio.run(_create_conversations(base, accounts, concurrency))


# --------------------------------------------------------------------------- through the core


def _core_job(job: dict[str, Any], src: Path, folder: Path, name: str) -> subprocess.Popen[str]:
    """`bench/accounts.py` on a job, with the checkout under test's `chatapp`."""
    path = folder / f"{name}.json"
    path.write_text(json.dumps(job))
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, str(ROOT / "bench" / "accounts.py"), str(path)]
    return subprocess.Popen(cmd, cwd=src, env=env, stdout=subprocess.PIPE, text=True)


def core_accounts(
    emails: list[str], password: str, overrides: dict[str, Any], src: Path, folder: Path
) -> list[Account]:
    """Register each email and start a session through ChatApp's core, one process per core
    (argon2 hashing is the cost); accounts that exist already are reused."""
    job = {"action": "register", "overrides": overrides, "password": password}
    procs = [
        _core_job({**job, "emails": emails[i::NCPU]}, src, folder, f"register-{i}")
        for i in range(NCPU)
    ]
    found: list[dict[str, str]] = []

    def read(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            found.append(json.loads(line))

    readers = [threading.Thread(target=read, args=(p,), daemon=True) for p in procs]
    for thread in readers:
        thread.start()
    last = time.monotonic()
    while any(t.is_alive() for t in readers):
        time.sleep(1)
        if time.monotonic() - last >= 30:
            last = time.monotonic()
            print(f"    {len(found)}/{len(emails)} accounts", flush=True)
    codes = [p.wait() for p in procs]
    if any(codes) or len(found) != len(emails):
        raise RuntimeError(f"core registration failed (exit codes {codes}, {len(found)} made)")
    by_email = {f["email"]: Account(f["email"], f["user_id"], f["access_token"]) for f in found}
    return [by_email[e] for e in emails]


def seed_history(
    account: Account,
    turns: int,
    reply_tokens: int,
    overrides: dict[str, Any],
    src: Path,
    folder: Path,
) -> str:
    """A new conversation of `account` holding `turns` turns, written as SQL rows; its id."""
    job = {
        "action": "seed", "overrides": overrides, "user_id": account.user_id, "turns": turns,
        "reply_tokens": reply_tokens,
    }  # fmt: skip
    proc = _core_job(job, src, folder, "seed")
    out, _ = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"seeding a {turns}-turn conversation failed (rc {proc.returncode})")
    return str(json.loads(out.strip().splitlines()[-1])["conversation_id"])


def make_users(
    base: str, n: int, *, how: str, overrides: dict[str, Any], src: Path, folder: Path
) -> tuple[list[Account], dict[str, str]]:
    """`n` accounts (`how`: "api" or "core") with an access token and a new conversation
    each; what each step took, for the report."""
    emails = [f"soak-{i:05d}@example.com" for i in range(n)]
    password = "soak-bench-password"
    took: dict[str, str] = {}
    t0 = time.monotonic()
    if how == "api":
        accounts, odd = api_accounts(base, emails, password, concurrency=8)
        way = "POST /api/auth/register + /api/auth/token, 8 at a time"
        way += "".join(f"; {what}: {count}" for what, count in odd.items())
    else:
        accounts = core_accounts(emails, password, overrides, src, folder)
        way = f"register_user + start_session in {NCPU} processes on the same PostgreSQL"
    dt = time.monotonic() - t0
    took["accounts"] = f"{n} in {dt:.0f} s ({n / dt:.1f}/s; {way})"
    print(f"  accounts: {took['accounts']}", flush=True)
    t0 = time.monotonic()
    accounts = create_conversations(base, accounts, concurrency=16)
    took["conversations"] = f"{n} in {time.monotonic() - t0:.0f} s, POST /api/conversations"
    print(f"  conversations: {took['conversations']}", flush=True)
    return accounts, took


# --------------------------------------------------------------------------- long history


@dataclass(frozen=True)
class LongHistory:
    """Turns, one at a time, in a new conversation and in one seeded with `turns` turns:
    (TTFT, reply) seconds of each, the first of each activating it from SQL."""

    turns: int
    fresh: list[tuple[float, float]]
    seeded: list[tuple[float, float]]

    def report(self) -> str:
        def cells(timings: list[tuple[float, float]]) -> tuple[float, ...]:
            rest = timings[1:] or [(math.nan, math.nan)]
            return (
                timings[0][0] * 1000,
                timings[0][1] * 1000,
                statistics.median(t for t, _ in rest) * 1000,
                statistics.median(r for _, r in rest) * 1000,
            )

        f, s = cells(self.fresh), cells(self.seeded)
        lines = [
            f"Long history: a turn in a conversation of {self.turns} turns (seeded as SQL rows) "
            "vs a new one, one turn at a time (ms; first turn activates it from SQL, then "
            f"median of {len(self.seeded) - 1})",
            f"  {'conversation':<18}{'TTFT 1st':>9}{'reply 1st':>10}{'TTFT':>8}{'reply':>8}",
            f"  {'new (baseline)':<18}"
            + "".join(f"{v:>{w}.0f}" for v, w in zip(f, _W, strict=True)),
            f"  {f'{self.turns} turns':<18}"
            + "".join(f"{v:>{w}.0f}" for v, w in zip(s, _W, strict=True)),
            f"  {'ratio':<18}"
            + "".join(f"{a / b:>{w}.2f}" for a, b, w in zip(s, f, _W, strict=True)),
        ]
        return "\n".join(lines)


_W = (9, 10, 8, 8)


async def _long_history(
    base: str, token: str, fresh: str, seeded: str, turns: int, reply_tokens: int
) -> LongHistory:
    import aiohttp

    async def run(session: aiohttp.ClientSession, conversation: str) -> list[tuple[float, float]]:
        url = f"{base}/api/conversations/{conversation}/messages"
        out = []
        for i in range(6):
            sent = time.perf_counter()
            content = f"long-history check turn {i}: tell me something about benchmarks"
            ended, first, error = await streamed_turn(session, url, token, content, reply_tokens)
            if error is not None or first is None:
                raise RuntimeError(f"long-history turn in {conversation}: {error}")
            out.append((first - sent, ended - sent))
        return out

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        return LongHistory(turns, await run(session, fresh), await run(session, seeded))


def long_history(
    base: str, token: str, fresh: str, seeded: str, turns: int, reply_tokens: int
) -> LongHistory:
    return asyncio.run(_long_history(base, token, fresh, seeded, turns, reply_tokens))
