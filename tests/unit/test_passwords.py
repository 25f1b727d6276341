"""Password hashing and checks run off the event loop (issue 9, item 4)."""

from __future__ import annotations

import asyncio

from chatapp.auth import passwords


async def test_password_checks_leave_the_event_loop_running() -> None:
    """18 argon2 verifications at once (~3 s of CPU on the bounded pool): the event loop
    keeps running other work meanwhile. On the loop (before the fix) they all completed
    within the first loop iterations, before anything else could run; off it, they are
    still pending after several iterations. No wall-clock bound: it holds under any load."""
    hashed = passwords.hash_password("a long enough passphrase")
    checks = asyncio.gather(
        *(passwords.verify_password_off_loop(f"wrong {i}", hashed) for i in range(16)),
        passwords.verify_password_off_loop("a long enough passphrase", hashed),
        passwords.verify_password_off_loop("anything", None),
    )
    for _ in range(5):  # other work gets its turns while the checks run
        await asyncio.sleep(0)
    assert not checks.done()
    assert await checks == [False] * 16 + [True, False]
    assert (await passwords.hash_password_off_loop("another passphrase")).startswith("$argon2")
