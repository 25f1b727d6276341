"""Password hashing and checks run off the event loop (issue 9, item 4)."""

from __future__ import annotations

import asyncio
import time

from chatapp.auth import passwords


async def test_password_checks_leave_the_event_loop_running() -> None:
    """18 argon2 verifications at once: the loop keeps ticking. On the loop they ran back
    to back, one stall of 18 verifications (5.4 s measured); off it, ticks are late only by
    what the OS scheduler costs (~1 ms quiet, ~0.3 s with the machine at load 20). Bound:
    3 verifications' time, measured in the same run (so it scales with the load)."""
    hashed = passwords.hash_password("a long enough passphrase")
    t = time.perf_counter()
    passwords.verify_password("wrong", hashed)
    bound = 3 * (time.perf_counter() - t)
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - t - 0.01)

    ticker = asyncio.create_task(tick())
    results = await asyncio.gather(
        *(passwords.verify_password_off_loop(f"wrong {i}", hashed) for i in range(16)),
        passwords.verify_password_off_loop("a long enough passphrase", hashed),
        passwords.verify_password_off_loop("anything", None),
    )
    stop.set()
    await ticker
    assert results == [False] * 16 + [True, False]
    assert max(lags) < bound, f"the loop stalled {max(lags):.3f} s (bound {bound:.3f} s)"
    assert (await passwords.hash_password_off_loop("another passphrase")).startswith("$argon2")
