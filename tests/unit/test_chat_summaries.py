"""Long chats keep their context: running summaries written in the background after a
turn (chatapp/chat/compaction.py), through `ChatService` over in-process ports — a SQLite
`ConversationStore` as the shards and the real `ProviderRouter` over a scripted provider."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from chatapp.chat import repository, summaries
from chatapp.chat.compaction import SUMMARY_HEADER
from chatapp.chat.hot import ConversationStore
from chatapp.chat.schemas import MessageCreate, RegenerateRequest
from chatapp.chat.service import ChatService, TurnDone
from chatapp.chat.summaries import SummaryPublic
from chatapp.config import DatabaseSettings, Settings
from chatapp.db.engine import make_engine, make_sessionmaker, migrate
from chatapp.db.models import UsageEvent
from chatapp.errors import ProviderAuth
from chatapp.llm.base import ChatMessage, ChatProvider
from chatapp.llm.router import build_router
from chatapp.usage.counters import MemoryCounters
from chatapp.usage.ledger import UsageLedger
from chatapp.usage.meter import UsageMeter
from tests.fakes.scripted import Answer, ScriptedProvider
from tests.fakes.users import create_user

# A 256-token window: with 32 tokens for the reply, three turns of about 60 tokens pass
# the 75% threshold; 40% of it (about 100 tokens) is kept for the newest turns.
SETTINGS = Settings.from_overrides(
    {
        "llm": {"model_name": "local", "context_window": 256, "default_max_tokens": 32},
        "chat": {
            "system_prompt": "You are terse.",
            "summary_threshold": 0.75,
            "summary_recent_share": 0.4,
            "summary_max_tokens": 64,
        },
        "rag": {"default_kb": "handbook", "mode": "off"},
    }
)
SUMMARY_1 = "The user is planning a week in Lisbon in May and likes trams."
SUMMARY_2 = "Lisbon in May, trams, and a day trip to Sintra on Wednesday."


def question(i: int) -> str:
    return f"Question {i}: what should I do on day {i} of my Lisbon trip? " + "Details. " * 8


def reply(i: int) -> str:
    return f"Reply {i}: ride tram 28 and walk the old town on day {i}."


class Rig:
    def __init__(self, db: DatabaseSettings, *, summaries_on: bool = True) -> None:
        self.engine = make_engine(db)
        self.sessionmaker = make_sessionmaker(self.engine)
        self.model = ScriptedProvider("self-hosted", Answer(SUMMARY_1))
        providers: dict[str, ChatProvider] = {"self-hosted": self.model}
        self.usage = UsageMeter(
            counters=MemoryCounters(),
            ledger=UsageLedger(sessionmaker=self.sessionmaker, flush_interval_s=0.01),
            sessionmaker=self.sessionmaker,
            monthly_tokens=None,
            token_limit=None,
            max_concurrent=8,
        )
        settings = SETTINGS
        if not summaries_on:
            settings = Settings.from_overrides(
                {
                    **SETTINGS.model_dump(),
                    "chat": {**SETTINGS.chat.model_dump(), "summaries": False},
                }
            )
        self.shards = ConversationStore(
            sessionmaker=self.sessionmaker, hot_turns=20, max_hot=100, idle_timeout_s=600
        )
        self.service = ChatService(
            settings=settings,
            shards=self.shards,
            router=build_router(settings, providers),
            usage=self.usage,
        )

    async def close(self) -> None:
        await self.service.compaction.drain()
        await self.usage.aclose()
        await self.engine.dispose()

    async def conversation(self) -> tuple[uuid.UUID, uuid.UUID]:
        async with self.sessionmaker() as session:
            user = await create_user(session)
            conv = await repository.create_conversation(session=session, user_id=user.id)
        return user.id, conv.id

    async def summary(self, conv: uuid.UUID) -> SummaryPublic | None:
        async with self.sessionmaker() as session:
            return await summaries.newest_summary(session=session, conversation_id=conv)

    async def turn(self, user: uuid.UUID, conv: uuid.UUID, i: int, **options: Any) -> TurnDone:
        """Turn `i`, answered `reply(i)`; the summary (if one starts) gets the default."""
        self.model.enqueue(Answer(reply(i)))
        events = await self.service.post_message(
            user_id=user,
            conversation_id=conv,
            body=MessageCreate(content=options.pop("content", question(i)), **options),
        )
        done = [e async for e in events][-1]
        assert isinstance(done, TurnDone), done
        return done

    def turn_prompts(self) -> list[list[ChatMessage]]:
        return [m for _, m in self.model.history if not is_summary_call(m)]

    def summary_prompts(self) -> list[list[ChatMessage]]:
        return [m for _, m in self.model.history if is_summary_call(m)]


def is_summary_call(messages: list[ChatMessage]) -> bool:
    return "running summary" in messages[0].content


def text_of(messages: list[ChatMessage]) -> str:
    return "\n".join(m.content for m in messages)


@pytest.fixture
def db(tmp_path: Path) -> DatabaseSettings:
    settings = DatabaseSettings(url=None, var_dir=tmp_path / "var")
    migrate(settings)
    return settings


@pytest.fixture
async def rig(db: DatabaseSettings) -> AsyncIterator[Rig]:
    rig = Rig(db)
    yield rig
    await rig.close()


async def test_a_long_chat_is_summarised_stored_used_and_refreshed(rig: Rig) -> None:
    user, conv = await rig.conversation()
    for i in (1, 2):
        await rig.turn(user, conv, i)
    await rig.service.compaction.drain()
    assert rig.summary_prompts() == [] and await rig.summary(conv) is None  # still fits

    await rig.turn(user, conv, 3)  # the chat outgrows the window: turns 1 and 2 go
    await rig.service.compaction.drain()
    first = await rig.summary(conv)
    assert first is not None
    assert (first.version, first.covers_seq, first.content) == (1, 3, SUMMARY_1)
    assert first.model == "local"
    (asked,) = rig.summary_prompts()
    assert question(1) in asked[-1].content and reply(2) in asked[-1].content
    assert question(3) not in asked[-1].content  # the newest turn stays verbatim

    # Passivated meanwhile: the shard loads the summary with the history on activation.
    rig.shards.forget(conv)
    rig.model.default = Answer(SUMMARY_2)  # what the next summary will say
    await rig.turn(user, conv, 4)
    prompt = rig.turn_prompts()[-1]
    assert prompt[0].content == "You are terse."
    assert prompt[1].role == "system" and prompt[1].content.startswith(SUMMARY_HEADER)
    assert f"<summary>\n{SUMMARY_1}\n</summary>" in prompt[1].content
    assert question(1) not in text_of(prompt) and reply(2) not in text_of(prompt)
    assert [m.content for m in prompt[2:]] == [question(3), reply(3), question(4)]

    # The chat grows on (a 256-token window holds little): the summary is rewritten with
    # the previous one folded in, as version 2.
    await rig.service.compaction.drain()
    newest = await rig.summary(conv)
    assert newest is not None
    assert (newest.version, newest.covers_seq, newest.content) == (2, 5, SUMMARY_2)
    assert f"Previous summary:\n<summary>\n{SUMMARY_1}\n</summary>" in (
        rig.summary_prompts()[-1][-1].content
    )
    await rig.turn(user, conv, 5)
    prompt = rig.turn_prompts()[-1]
    assert SUMMARY_2 in prompt[1].content and SUMMARY_1 not in text_of(prompt)
    assert [m.content for m in prompt[2:]] == [question(4), reply(4), question(5)]
    await rig.service.compaction.drain()
    async with rig.sessionmaker() as session:  # every message is still stored
        rows, _ = await repository.list_messages(session=session, conversation_id=conv, limit=100)
    assert len(rows) == 10

    # The summaries' model calls are metered apart from the turns.
    await rig.usage.ledger.flush()
    async with rig.sessionmaker() as session:
        kinds = list(
            await session.scalars(select(UsageEvent.kind).where(UsageEvent.user_id == user))
        )
    assert kinds.count("chat") == 5 and kinds.count("summary") == len(rig.summary_prompts())


async def test_a_turn_never_waits_for_its_summary(rig: Rig) -> None:
    user, conv = await rig.conversation()
    await rig.turn(user, conv, 1)
    await rig.turn(user, conv, 2)
    gate, called = asyncio.Event(), asyncio.Event()
    rig.model.default = Answer(SUMMARY_1, gate=gate, called=called)  # the summary blocks

    done = await asyncio.wait_for(rig.turn(user, conv, 3), timeout=5)
    await asyncio.wait_for(called.wait(), timeout=5)
    assert done.message.content == reply(3) and done.message.status == "complete"
    assert rig.service.compaction.running(conv)
    assert len(rig.summary_prompts()) == 1 and await rig.summary(conv) is None
    # The next turn goes on as before (trimmed by the model's window, no summary yet),
    # and starts no second summary of the same conversation meanwhile.
    await asyncio.wait_for(rig.turn(user, conv, 4), timeout=5)
    assert SUMMARY_HEADER not in text_of(rig.turn_prompts()[-1])
    assert len(rig.summary_prompts()) == 1

    gate.set()
    await rig.service.compaction.drain()
    stored = await rig.summary(conv)
    assert stored is not None and stored.version == 1 and stored.content == SUMMARY_1


async def test_a_failing_summariser_leaves_the_chat_working(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    user, conv = await rig.conversation()
    await rig.turn(user, conv, 1)
    await rig.turn(user, conv, 2)
    rig.model.enqueue(Answer(reply(3)), ProviderAuth("the provider refused the key"))
    events = await rig.service.post_message(
        user_id=user, conversation_id=conv, body=MessageCreate(content=question(3))
    )
    with caplog.at_level(logging.WARNING, logger="chatapp.chat.compaction"):
        done = [e async for e in events][-1]
        await rig.service.compaction.drain()
    assert isinstance(done, TurnDone) and done.message.content == reply(3)
    assert await rig.summary(conv) is None
    assert any("not written" in r.getMessage() for r in caplog.records)

    # The chat goes on: the next prompt holds the turns as before, and the summary is
    # tried again after it.
    await rig.turn(user, conv, 4)
    prompt = rig.turn_prompts()[-1]
    assert SUMMARY_HEADER not in text_of(prompt) and question(1) in text_of(prompt)
    await rig.service.compaction.drain()
    stored = await rig.summary(conv)
    assert stored is not None and stored.version == 1


async def test_an_edit_before_the_summarised_point_invalidates_the_summary(rig: Rig) -> None:
    user, conv = await rig.conversation()
    for i in (1, 2, 3):
        await rig.turn(user, conv, i)
    await rig.service.compaction.drain()
    summary = await rig.summary(conv)
    assert summary is not None and summary.covers_seq == 3

    # Regenerating the last answer (after the summarised point) keeps the summary.
    rig.model.enqueue(Answer("Another reply 3."))
    events = await rig.service.regenerate(
        user_id=user, conversation_id=conv, options=RegenerateRequest()
    )
    assert isinstance([e async for e in events][-1], TurnDone)
    assert SUMMARY_1 in text_of(rig.turn_prompts()[-1])
    await rig.service.compaction.drain()
    assert await rig.summary(conv) == summary

    # Editing question 2 (seq 2, summarised) drops the summary: the edited turn's prompt
    # holds the messages themselves, and the next turns rebuild it.
    rig.model.default = Answer(SUMMARY_2)
    await rig.turn(user, conv, 9, content="Question 2, edited: Porto instead?", replace_from_seq=2)
    prompt = rig.turn_prompts()[-1]
    assert SUMMARY_HEADER not in text_of(prompt)
    assert [m.content for m in prompt[1:]] == [
        question(1),
        reply(1),
        "Question 2, edited: Porto instead?",
    ]
    await rig.service.compaction.drain()
    assert await rig.summary(conv) is None
    await rig.turn(user, conv, 10)
    await rig.turn(user, conv, 11)
    await rig.service.compaction.drain()
    rebuilt = await rig.summary(conv)
    assert rebuilt is not None and rebuilt.content == SUMMARY_2 and rebuilt.version == 1
    assert "Porto" in rig.summary_prompts()[-1][-1].content


async def test_summaries_can_be_switched_off(db: DatabaseSettings) -> None:
    rig = Rig(db, summaries_on=False)
    try:
        user, conv = await rig.conversation()
        for i in (1, 2, 3, 4):
            await rig.turn(user, conv, i)
        await rig.service.compaction.drain()
        assert rig.summary_prompts() == [] and await rig.summary(conv) is None
    finally:
        await rig.close()


async def test_a_summary_written_before_an_edit_is_not_stored_after_it(rig: Rig) -> None:
    user, conv = await rig.conversation()
    await rig.turn(user, conv, 1)
    await rig.turn(user, conv, 2)
    gate, called = asyncio.Event(), asyncio.Event()
    rig.model.default = Answer(SUMMARY_1, gate=gate, called=called)
    await rig.turn(user, conv, 3)  # its summary (of turns 1 and 2) waits on the gate
    await asyncio.wait_for(called.wait(), timeout=5)
    assert rig.service.compaction.running(conv)
    await rig.turn(user, conv, 9, content="Question 2, edited: Porto instead?", replace_from_seq=2)

    gate.set()  # the summary of the old turns comes back after the edit: it is dropped
    await rig.service.compaction.drain()
    assert await rig.summary(conv) is None
    await rig.turn(user, conv, 10)
    assert SUMMARY_HEADER not in text_of(rig.turn_prompts()[-1])
