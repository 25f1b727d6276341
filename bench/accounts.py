"""Bench accounts and history made through ChatApp's core, against the database a running
ChatApp uses, for load tests too large for the HTTP registration path (two argon2 hashes per
account through the API, ~160 ms of CPU each). Here one hash serves every account.

Run with the checkout under test on ``PYTHONPATH`` (this file imports nothing from `bench`,
so it works against another checkout's `chatapp`), one process per core for registration:

    PYTHONPATH=<checkout> python bench/accounts.py JOB.json

JOB is JSON with the settings overrides ChatApp was started with (database URL, secret key,
auth settings), and an action:

- ``{"action": "register", "emails": [...], "password": "..."}``: `register_user` for each
  email (an account that already exists, from an earlier run on a kept database, is reused),
  then `start_session`; prints one JSON line per account:
  ``{"email", "user_id", "access_token"}``.
- ``{"action": "seed", "user_id": "...", "turns": 500, "reply_tokens": 64}``: a new
  conversation of USER_ID holding TURNS user/assistant pairs, written as rows (the shard
  activates it from SQL on its next turn); prints ``{"conversation_id": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from chatapp.auth.service import TokenSigner, register_user, start_session
from chatapp.config import Settings
from chatapp.db.engine import make_engine, make_sessionmaker
from chatapp.db.models import Conversation, Message, User


async def register(settings: Settings, emails: list[str], password: str) -> None:
    engine = make_engine(settings.database)
    sessionmaker = make_sessionmaker(engine)
    signer = TokenSigner.from_settings(settings.auth, secret=settings.secret_key)
    try:
        password_hash: str | None = None
        for email in emails:
            async with sessionmaker() as session:
                found = await session.scalar(select(User).where(User.email == email))
                if found is not None:  # from an earlier run on a kept database
                    user = found
                elif password_hash is None:
                    user = await register_user(
                        session=session,
                        settings=settings.auth,
                        email=email,
                        password=password,
                        display_name=email.split("@")[0],
                    )
                    password_hash = user.password_hash
                else:
                    # Every bench account has the same password: its argon2 hash (salt
                    # included) is valid for each of them, so it is computed once, not
                    # 10,000 times (~160 ms of CPU each). The row is the one
                    # `register_user` writes.
                    user = User(
                        email=email,
                        display_name=email.split("@")[0],
                        password_hash=password_hash,
                        role="user",
                    )
                    session.add(user)
                    await session.commit()
                tokens = await start_session(session=session, signer=signer, user=user)
            line = {"email": email, "user_id": str(user.id), "access_token": tokens.access_token}
            print(json.dumps(line), flush=True)
    finally:
        await engine.dispose()


async def seed(settings: Settings, user_id: uuid.UUID, turns: int, reply_tokens: int) -> None:
    engine = make_engine(settings.database)
    reply = " ".join(f"w{i}" for i in range(reply_tokens))
    try:
        async with make_sessionmaker(engine)() as session:
            conversation = Conversation(user_id=user_id, title=f"{turns}-turn history")
            session.add(conversation)
            await session.flush()
            for turn in range(turns):
                question = f"seeded turn {turn}: tell me something about benchmarks"
                session.add_all(
                    [
                        Message(
                            conversation_id=conversation.id,
                            seq=2 * turn,
                            role="user",
                            content=question,
                        ),
                        Message(
                            conversation_id=conversation.id,
                            seq=2 * turn + 1,
                            role="assistant",
                            content=reply,
                            finish_reason="stop",
                            model="seeded",
                            prompt_tokens=len(question.split()),
                            completion_tokens=reply_tokens,
                        ),
                    ]
                )
            await session.commit()
            print(json.dumps({"conversation_id": str(conversation.id)}), flush=True)
    finally:
        await engine.dispose()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(f"usage: PYTHONPATH=<checkout> python bench/accounts.py JOB.json\n\n{__doc__}")
        return 2
    job: dict[str, Any] = json.loads(Path(argv[0]).read_text())
    settings = Settings.from_overrides(job["overrides"])
    if job["action"] == "register":
        asyncio.run(register(settings, job["emails"], job["password"]))
    elif job["action"] == "seed":
        user_id = uuid.UUID(job["user_id"])
        asyncio.run(seed(settings, user_id, job["turns"], job["reply_tokens"]))
    else:
        print(f"unknown action {job['action']!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
