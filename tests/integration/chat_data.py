"""Accounts, conversations, messages and usage made through ChatApp's own code paths
(registration, the chat service's turns over the core's conversation store, the usage
ledger) without Ray, for the backup and export tests; and every row read back."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatapp.auth import service as accounts
from chatapp.auth.service import register_user
from chatapp.chat import repository
from chatapp.chat.hot import ConversationStore
from chatapp.chat.schemas import MessageCreate
from chatapp.chat.service import ChatService, TurnDone
from chatapp.config import AuthSettings, DatabaseSettings, Settings
from chatapp.db.engine import make_engine, make_sessionmaker
from chatapp.db.models import Base, User
from chatapp.llm.base import ChatProvider
from chatapp.llm.router import build_router
from chatapp.usage.counters import MemoryCounters
from chatapp.usage.ledger import UsageLedger
from chatapp.usage.meter import UsageMeter
from tests.fakes.scripted import Answer, ScriptedProvider

PASSWORD = "correct horse battery staple"
SETTINGS = Settings.from_overrides(
    {"llm": {"model_name": "local", "context_window": 4096, "default_max_tokens": 32}}
)


class Chats:
    """The chat service over one database, answered by a scripted model."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        self.model = ScriptedProvider("self-hosted", Answer("A scripted answer, ünïcödé ✓."))
        providers: dict[str, ChatProvider] = {"self-hosted": self.model}
        self.usage = UsageMeter(
            counters=MemoryCounters(),
            ledger=UsageLedger(sessionmaker=sessionmaker, flush_interval_s=0.01),
            sessionmaker=sessionmaker,
            monthly_tokens=None,
            token_limit=None,
            max_concurrent=8,
        )
        self.service = ChatService(
            settings=SETTINGS,
            shards=ConversationStore(
                sessionmaker=sessionmaker, hot_turns=20, max_hot=100, idle_timeout_s=600
            ),
            router=build_router(SETTINGS, providers),
            usage=self.usage,
        )

    async def user(self, tag: str = "") -> User:
        async with self.sessionmaker() as session:
            return await register_user(
                session=session,
                settings=AuthSettings(),
                email=f"{tag or 'u'}-{uuid.uuid4().hex[:8]}@example.com",
                password=PASSWORD,
                display_name=f"Person {tag}",
            )

    async def api_key(self, user: User, name: str = "laptop") -> str:
        async with self.sessionmaker() as session:
            _, key = await accounts.create_api_key(session=session, user=user, name=name)
        return key

    async def conversation(self, user: User, title: str = "") -> uuid.UUID:
        async with self.sessionmaker() as session:
            conversation = await repository.create_conversation(
                session=session, user_id=user.id, title=title
            )
        return conversation.id

    async def turn(self, user: User, conversation_id: uuid.UUID, content: str) -> None:
        events = await self.service.post_message(
            user_id=user.id,
            conversation_id=conversation_id,
            body=MessageCreate(content=content, rag="off", stream=False),
        )
        assert isinstance([e async for e in events][-1], TurnDone)

    async def chats(self, user: User, turns: Sequence[int], tag: str) -> list[uuid.UUID]:
        """A conversation per entry of `turns`, with that many turns each."""
        made = []
        for i, n in enumerate(turns):
            conversation = await self.conversation(user, title=f"{tag} chat {i}")
            for t in range(n):
                await self.turn(user, conversation, f"{tag} question {i}.{t}: why?")
            made.append(conversation)
        return made

    async def aclose(self) -> None:
        await self.usage.aclose()  # the ledger writes what it holds


async def populate(settings: DatabaseSettings) -> dict[str, Any]:
    """Two users with conversations (one empty, one renamed, one long), API keys and
    usage; returns who they are."""
    engine = make_engine(settings)
    chats = Chats(make_sessionmaker(engine))
    try:
        alice, bob = await chats.user("alice"), await chats.user("bob")
        await chats.api_key(alice)
        await chats.chats(alice, [0, 1, 4], "alice")
        await chats.chats(bob, [2], "bob")
        return {"emails": [alice.email, bob.email], "ids": [alice.id, bob.id]}
    finally:
        await chats.aclose()
        await engine.dispose()


async def every_row(settings: DatabaseSettings) -> dict[str, list[dict[str, Any]]]:
    """Every row of every ChatApp table, in primary-key order."""
    engine = make_engine(settings)
    try:
        async with engine.connect() as conn:
            tables = {}
            for table in Base.metadata.sorted_tables:
                query = select(table).order_by(*table.primary_key.columns)
                tables[table.name] = [dict(r._mapping) for r in await conn.execute(query)]
            return tables
    finally:
        await engine.dispose()


async def conversations_as_read(settings: DatabaseSettings) -> dict[str, Any]:
    """Every user's conversations with all their messages, read as the API reads them."""
    engine = make_engine(settings)
    try:
        async with make_sessionmaker(engine)() as session:
            users, _ = await accounts.list_users(session=session, limit=1000, offset=0)
            read: dict[str, Any] = {}
            for user in users:
                cursor: str | None = None
                while True:
                    page, cursor = await repository.list_conversations(
                        session=session, user_id=user.id, limit=2, cursor=cursor
                    )
                    for conversation in page:
                        messages, more = await repository.list_messages(
                            session=session, conversation_id=conversation.id, limit=1000
                        )
                        assert not more
                        read[str(conversation.id)] = {
                            "user": user.email,
                            "title": conversation.title,
                            "updated_at": conversation.updated_at,
                            "messages": [
                                (m.seq, m.role, m.content, m.status, m.model, m.created_at)
                                for m in messages
                            ],
                        }
                    if cursor is None:
                        break
            return read
    finally:
        await engine.dispose()


async def can_log_in(settings: DatabaseSettings, email: str) -> bool:
    engine = make_engine(settings)
    try:
        async with make_sessionmaker(engine)() as session:
            user = await accounts.authenticate(session=session, email=email, password=PASSWORD)
            return user is not None
    finally:
        await engine.dispose()
