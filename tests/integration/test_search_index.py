"""Conversation search with a pathological `q` (issue 9, item 10): the match is right on
both backends, the text is bounded (422 over HTTP) and searches are rate-limited (429), and
on PostgreSQL the long query is answered from the full-text index instead of a substring
scan of every message (checked with EXPLAIN, not a clock)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, text

from chatapp.chat import repository
from chatapp.config import DatabaseSettings, Settings
from chatapp.db.engine import make_engine, make_sessionmaker, migrate
from chatapp.db.models import Conversation, Message, utcnow
from chatapp.errors import InvalidRequest
from tests.conftest import expect_error, register_and_login
from tests.fakes.users import create_user

# The attack: long messages of one repeated letter, and a long query that almost matches
# them. A substring scan compares the query at every offset of every message.
LONG_MESSAGE = " ".join(["a" * 1000] * 4)
PATHOLOGICAL_Q = "a" * 99 + "b"


async def _fill(sessionmaker: Any, *, conversations: int, messages: int) -> uuid.UUID:
    """A user with `conversations` x `messages` long messages; returns the user's id."""
    async with sessionmaker() as session:
        user_id = (await create_user(session)).id
        now = utcnow()
        conv_ids = [uuid.uuid4() for _ in range(conversations)]
        await session.execute(
            insert(Conversation),
            [
                {"id": c, "user_id": user_id, "title": "", "created_at": now, "updated_at": now}
                for c in conv_ids
            ],
        )
        await session.execute(
            insert(Message),
            [
                {
                    "id": uuid.uuid4(),
                    "conversation_id": c,
                    "seq": seq,
                    "role": "user",
                    "content": LONG_MESSAGE,
                    "created_at": now,
                }
                for c in conv_ids
                for seq in range(messages)
            ],
        )
        await session.commit()
    return user_id


async def test_search_matches_substrings_literally_on_both_backends(sessionmaker: Any) -> None:
    user_id = await _fill(sessionmaker, conversations=2, messages=3)
    async with sessionmaker() as session:
        target = await repository.create_conversation(session=session, user_id=user_id)
        await repository.append_message(
            session=session,
            conversation_id=target.id,
            seq=0,
            message=f"{LONG_MESSAGE} {PATHOLOGICAL_Q.upper()} 100%_done",
        )
        titled = await repository.create_conversation(
            session=session, user_id=user_id, title="Budget 100%_DONE"
        )
        other = (await create_user(session)).id
        await repository.create_conversation(session=session, user_id=other, title=PATHOLOGICAL_Q)

        async def search(q: str) -> list[uuid.UUID]:
            rows, _ = await repository.list_conversations(
                session=session, user_id=user_id, limit=20, q=q
            )
            return [r.id for r in rows]

        assert await search(PATHOLOGICAL_Q) == [target.id]  # case-insensitive, mine only
        assert await search("100%_done") == [titled.id, target.id]
        assert await search("100%xdone") == []  # % and _ are not wildcards
        assert await search("%%%") == []


def test_search_text_is_bounded() -> None:
    assert repository.search_text("  quokka \n", max_chars=10) == "quokka"
    assert repository.search_text("   ", max_chars=10) is None
    assert repository.search_text(None, max_chars=10) is None
    with pytest.raises(InvalidRequest, match="at most 10"):
        repository.search_text("x" * 11, max_chars=10)


@pytest.fixture
def pg_database(pg_url: str, tmp_path: Any) -> DatabaseSettings:
    """The real PostgreSQL database, migrated to head (before any event loop runs)."""
    settings = DatabaseSettings(url=pg_url, var_dir=tmp_path)
    migrate(settings)
    return settings


@pytest.fixture
async def pg_sessionmaker(pg_database: DatabaseSettings) -> Any:
    engine = make_engine(pg_database)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def test_pathological_search_is_answered_from_the_index(
    pg_sessionmaker: Any,
) -> None:
    user_id = await _fill(pg_sessionmaker, conversations=40, messages=50)
    async with pg_sessionmaker() as session:
        await session.execute(text("ANALYZE messages"))
        await session.execute(text("ANALYZE conversations"))
        query = repository.conversations_query(
            user_id=user_id, dialect="postgresql", q=PATHOLOGICAL_Q
        ).limit(21)
        sql = query.compile(
            dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}
        )
        plan = "\n".join((await session.scalars(text(f"EXPLAIN {sql}"))).all())
        found, _ = await repository.list_conversations(
            session=session, user_id=user_id, limit=20, q=PATHOLOGICAL_Q
        )
    assert found == []
    assert "ix_messages_content_fts" in plan, plan
    assert "Seq Scan on messages" not in plan, plan


# -- over HTTP: the bound on `q` and the rate limit ------------------------------------------


@pytest.fixture
def client(chat_app: str) -> Iterator[httpx.Client]:
    """A fresh user of the running app (their own rate-limit counters)."""
    with httpx.Client(base_url=chat_app, timeout=120, headers=register_and_login(chat_app)) as c:
        yield c


def test_an_oversized_search_is_422_with_a_clear_message(client: httpx.Client) -> None:
    limit = Settings().chat.max_search_chars
    assert client.get("/api/conversations", params={"q": "a" * limit}).status_code == 200
    error = expect_error(client.get("/api/conversations", params={"q": "a" * 5000 + "b"}), 422)
    assert f"at most {limit}" in error["message"] and error["message"].startswith("q:")


def test_searches_are_rate_limited_per_user(client: httpx.Client, chat_app: str) -> None:
    limit = int(Settings().chat.search_limit.split("/")[0])
    for i in range(limit):
        assert client.get("/api/conversations", params={"q": f"w{i}"}).status_code == 200
    refused = client.get("/api/conversations", params={"q": "one more"})
    assert expect_error(refused, 429)["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    # listing without a search is not limited, and other users search on
    assert client.get("/api/conversations").status_code == 200
    with httpx.Client(base_url=chat_app, headers=register_and_login(chat_app)) as other:
        assert other.get("/api/conversations", params={"q": "mine"}).status_code == 200
