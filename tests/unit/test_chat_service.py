"""The chat turn in the core, without Ray: `ChatService` over in-process ports — a SQLite
`ConversationStore` as the shards, the real `ProviderRouter` over a scripted provider, and
a small in-process retriever."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatapp.chat import repository
from chatapp.chat.hot import ConversationStore
from chatapp.chat.ports import ReplyRecord
from chatapp.chat.schemas import MessageCreate, RegenerateRequest
from chatapp.chat.service import ChatService, TurnDone, TurnEvent, TurnFailed, TurnStarted
from chatapp.config import DatabaseSettings, Settings
from chatapp.db.engine import make_engine, make_sessionmaker, migrate
from chatapp.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    ProviderAuth,
    ProviderTimeout,
    RateLimited,
)
from chatapp.llm.base import ChatMessage, ChatProvider, TextDelta, collect
from chatapp.llm.router import build_router
from chatapp.rag.schemas import KnowledgeBasePublic, RetrievedChunk
from chatapp.usage.counters import MemoryCounters
from chatapp.usage.ledger import UsageLedger
from chatapp.usage.meter import UsageMeter
from tests.fakes.scripted import Answer, ScriptedProvider
from tests.fakes.users import create_user

SETTINGS = Settings.from_overrides(
    {
        "llm": {"model_name": "local", "context_window": 2048, "default_max_tokens": 32},
        "chat": {"system_prompt": "You are terse."},
        "rag": {"default_kb": "handbook", "mode": "auto", "auto_threshold": 0.5},
    }
)


class Handbook:
    """A one-document knowledge base; `score` says how well every query matches it."""

    def __init__(self, score: float) -> None:
        self.score = score
        self.queries: list[str] = []

    async def search(
        self,
        query: str,
        knowledge_base: str,
        *,
        top_k: int | None = None,
        score_threshold: float | None = None,
        missing_ok: bool = False,
        min_version: int | None = None,
    ) -> list[RetrievedChunk]:
        if knowledge_base != "handbook":
            if missing_ok:
                return []
            raise NotFound(f"knowledge base {knowledge_base!r} not found")
        self.queries.append(query)
        hit = RetrievedChunk(
            chunk_id="c1",
            knowledge_base="handbook",
            version=1,
            source="handbook/leave.md",
            title="Leave policy",
            position=0,
            start=0,
            end=40,
            score=self.score,
            text="Staff get 30 days of paid leave a year.",
        )
        return [hit]

    async def knowledge_bases(self) -> list[KnowledgeBasePublic]:
        return []


class Rig:
    def __init__(
        self,
        db: DatabaseSettings,
        *,
        score: float = 0.9,
        budget: int | None = None,
        max_concurrent: int = 8,
    ):
        self.engine = make_engine(db)
        self.sessionmaker = make_sessionmaker(self.engine)
        self.model = ScriptedProvider("self-hosted", Answer("Thirty days of leave."))
        providers: dict[str, ChatProvider] = {"self-hosted": self.model}
        self.handbook = Handbook(score)
        self.usage = self.meter(budget, max_concurrent)
        self.service = ChatService(
            settings=SETTINGS,
            shards=ConversationStore(
                sessionmaker=self.sessionmaker, hot_turns=20, max_hot=100, idle_timeout_s=600
            ),
            router=build_router(SETTINGS, providers),
            retriever=self.handbook,
            usage=self.usage,
        )

    def meter(self, budget: int | None, max_concurrent: int = 8) -> UsageMeter:
        """A usage meter of its own (as a fresh replica has), over this rig's database."""
        return UsageMeter(
            counters=MemoryCounters(),
            ledger=UsageLedger(sessionmaker=self.sessionmaker, flush_interval_s=0.01),
            sessionmaker=self.sessionmaker,
            monthly_tokens=budget,
            token_limit=None,
            max_concurrent=max_concurrent,
        )

    async def close(self) -> None:
        await self.usage.aclose()
        await self.engine.dispose()

    async def conversation(self) -> tuple[uuid.UUID, uuid.UUID]:
        async with self.sessionmaker() as session:
            user = await create_user(session)
            conv = await repository.create_conversation(session=session, user_id=user.id)
        return user.id, conv.id

    async def stored(self, conversation_id: uuid.UUID) -> list[tuple[str, str, str]]:
        async with self.sessionmaker() as session:
            rows, _ = await repository.list_messages(
                session=session, conversation_id=conversation_id, limit=100
            )
        return [(r.role, r.content, r.status) for r in rows]

    def system_prompt_of_last_call(self) -> str:
        _, messages = self.model.history[-1]
        assert messages[0].role == "system"
        return messages[0].content

    def question_of_last_call(self) -> str:
        """The last user message the model received (where sources are put)."""
        _, messages = self.model.history[-1]
        assert messages[-1].role == "user"
        return messages[-1].content


@pytest.fixture
def db(tmp_path: Path) -> DatabaseSettings:
    """A SQLite database migrated to head (before any event loop runs: Alembic runs its
    own)."""
    settings = DatabaseSettings(url=None, var_dir=tmp_path / "var")
    migrate(settings)
    return settings


@pytest.fixture
async def rig(db: DatabaseSettings) -> AsyncIterator[Rig]:
    rig = Rig(db)
    yield rig
    await rig.close()


async def ask(
    rig: Rig,
    user: uuid.UUID,
    conv: uuid.UUID,
    content: str,
    idempotency_key: str | None = None,
    **options: Any,
) -> list[TurnEvent]:
    events = await rig.service.post_message(
        user_id=user,
        conversation_id=conv,
        body=MessageCreate(content=content, **options),
        idempotency_key=idempotency_key,
    )
    return [event async for event in events]


async def test_a_turn_streams_then_stores_question_and_reply(rig: Rig) -> None:
    user, conv = await rig.conversation()
    events = await ask(rig, user, conv, "How much leave do I get?", rag="off")
    assert isinstance(events[0], TurnStarted) and events[0].user_message.seq == 0
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Thirty days of leave."
    done = events[-1]
    assert isinstance(done, TurnDone)
    assert done.message.seq == 1 and done.message.content == text
    assert done.message.provider == "self-hosted" and done.message.model == "local"
    assert await rig.stored(conv) == [
        ("user", "How much leave do I get?", "complete"),
        ("assistant", "Thirty days of leave.", "complete"),
    ]
    # the next turn's prompt holds the history
    await ask(rig, user, conv, "And sick days?", rag="off")
    _, prompt = rig.model.history[-1]
    assert [m.content for m in prompt[1:]] == [
        "How much leave do I get?",
        "Thirty days of leave.",
        "And sick days?",
    ]


async def test_a_failure_before_the_first_token_undoes_the_turn(rig: Rig) -> None:
    user, conv = await rig.conversation()
    rig.model.enqueue(ProviderAuth("the model's key is wrong"))  # not retried
    with pytest.raises(ProviderAuth, match="key is wrong"):
        await ask(rig, user, conv, "Hello?", rag="off")
    assert await rig.stored(conv) == []
    # the conversation is free again: the next turn is answered
    assert isinstance((await ask(rig, user, conv, "Hello again?", rag="off"))[-1], TurnDone)


async def test_a_failure_after_the_first_token_stores_the_partial_reply(rig: Rig) -> None:
    user, conv = await rig.conversation()
    rig.model.enqueue(Answer("one two three four", fail_after=2, error=ProviderTimeout("too slow")))
    events = await ask(rig, user, conv, "Count.", rag="off")
    failed = events[-1]
    assert isinstance(failed, TurnFailed)
    assert type(failed.error) is ProviderTimeout  # its class, so its status, is kept
    assert failed.message is not None and failed.message.status == "incomplete"
    assert failed.message.finish_reason == "error"
    assert await rig.stored(conv) == [
        ("user", "Count.", "complete"),
        ("assistant", "one two ", "incomplete"),
    ]


async def test_a_client_that_goes_away_leaves_the_partial_reply_stored(rig: Rig) -> None:
    user, conv = await rig.conversation()
    rig.model.enqueue(Answer("a long answer that nobody reads to the end"))
    events = await rig.service.post_message(
        user_id=user, conversation_id=conv, body=MessageCreate(content="Talk.", rag="off")
    )
    async for event in events:
        if isinstance(event, TextDelta):
            break
    await events.aclose()
    stored = await rig.stored(conv)
    assert stored[0] == ("user", "Talk.", "complete")
    assert stored[1][0] == "assistant" and stored[1][2] == "incomplete"
    assert "a long answer that nobody reads to the end".startswith(stored[1][1])


async def test_the_monthly_budget_refuses_a_turn_before_anything_is_stored(
    db: DatabaseSettings,
) -> None:
    rig = Rig(db, budget=20)
    try:
        user, conv = await rig.conversation()
        await ask(rig, user, conv, "First question", rag="off")  # 10 prompt + 4 reply tokens
        await ask(rig, user, conv, "Second question", rag="off")  # 28 of 20 now
        with pytest.raises(RateLimited, match="monthly token budget used up"):
            await ask(rig, user, conv, "Third question", rag="off")
        assert [c for _, c, _ in await rig.stored(conv)][::2] == [
            "First question",
            "Second question",
        ]
    finally:
        await rig.close()


async def test_grounding_always_cites_the_sources_and_stores_them(rig: Rig) -> None:
    user, conv = await rig.conversation()
    rig.handbook.score = 0.1  # "always" grounds even on a weak match
    done = (await ask(rig, user, conv, "Leave?", rag="always"))[-1]
    assert "30 days of paid leave" in rig.question_of_last_call()
    assert rig.system_prompt_of_last_call() == "You are terse."  # never the sources
    assert isinstance(done, TurnDone)
    assert [(s.index, s.title, s.source) for s in done.message.sources] == [
        (1, "Leave policy", "handbook/leave.md")
    ]
    async with rig.sessionmaker() as session:
        rows, _ = await repository.list_messages(session=session, conversation_id=conv, limit=9)
    assert rows[-1].sources is not None and rows[-1].sources[0]["title"] == "Leave policy"


async def test_grounding_auto_uses_only_a_good_match_and_off_never_searches(rig: Rig) -> None:
    user, conv = await rig.conversation()
    rig.handbook.score = 0.2  # below the 0.5 threshold: answered without sources
    done = (await ask(rig, user, conv, "What's the weather?"))[-1]
    assert isinstance(done, TurnDone) and done.message.sources == []
    assert rig.system_prompt_of_last_call() == "You are terse."
    rig.handbook.score = 0.8
    done = (await ask(rig, user, conv, "How much leave?"))[-1]
    assert isinstance(done, TurnDone) and len(done.message.sources) == 1
    searched = len(rig.handbook.queries)
    await ask(rig, user, conv, "Thanks", rag="off")
    assert len(rig.handbook.queries) == searched
    assert rig.system_prompt_of_last_call() == "You are terse."


async def test_an_unknown_knowledge_base_is_404_and_stores_nothing(rig: Rig) -> None:
    user, conv = await rig.conversation()
    with pytest.raises(NotFound, match="nope"):
        await ask(rig, user, conv, "Hi", knowledge_base_id="nope")
    assert await rig.stored(conv) == []


async def test_regenerate_replaces_the_last_reply(rig: Rig) -> None:
    user, conv = await rig.conversation()
    await ask(rig, user, conv, "Name a colour.", rag="off")
    rig.model.enqueue(Answer("Blue."))
    events = await rig.service.regenerate(
        user_id=user, conversation_id=conv, options=RegenerateRequest(rag="off")
    )
    done = [e async for e in events][-1]
    assert isinstance(done, TurnDone) and done.message.seq == 1
    assert await rig.stored(conv) == [
        ("user", "Name a colour.", "complete"),
        ("assistant", "Blue.", "complete"),
    ]


async def test_edit_and_resend_replaces_the_message_and_everything_after(rig: Rig) -> None:
    user, conv = await rig.conversation()
    await ask(rig, user, conv, "Name a fruit.", rag="off")
    await ask(rig, user, conv, "Another one.", rag="off")
    rig.model.enqueue(Answer("Carrot."))
    await ask(rig, user, conv, "Name a vegetable.", rag="off", replace_from_seq=0)
    assert await rig.stored(conv) == [
        ("user", "Name a vegetable.", "complete"),
        ("assistant", "Carrot.", "complete"),
    ]
    with pytest.raises(InvalidRequest, match="not a user message"):
        await ask(rig, user, conv, "x", rag="off", replace_from_seq=1)


async def test_an_edit_whose_answer_fails_at_once_puts_the_history_back(rig: Rig) -> None:
    user, conv = await rig.conversation()
    await ask(rig, user, conv, "Original question", rag="off")
    before = await rig.stored(conv)
    rig.model.enqueue(ProviderAuth("down"))
    with pytest.raises(ProviderAuth):
        await ask(rig, user, conv, "Edited question", rag="off", replace_from_seq=0)
    assert await rig.stored(conv) == before


async def test_a_completion_counts_its_usage_and_keeps_the_error_class(
    db: DatabaseSettings,
) -> None:
    rig = Rig(db, budget=1000)
    try:
        user, _ = await rig.conversation()
        params = rig.service.sampling_params()
        answer = await rig.service.complete(
            user_id=user, messages=[ChatMessage("user", "Hi")], params=params
        )
        completion = await collect(answer.chunks)
        assert completion.text == "Thirty days of leave." and answer.sources == []
        assert await rig.usage.used_this_month(user) == 14
        rig.model.enqueue(Answer("a b c", fail_after=1, error=ProviderTimeout("slow")))
        answer = await rig.service.complete(
            user_id=user, messages=[ChatMessage("user", "Hi")], params=params
        )
        with pytest.raises(ProviderTimeout):
            await collect(answer.chunks)
        with pytest.raises(InvalidRequest, match="non-empty user message"):
            await rig.service.complete(
                user_id=user, messages=[ChatMessage("system", "x")], params=params
            )
    finally:
        await rig.close()


async def hi(rig: Rig, user: uuid.UUID) -> Any:
    """A /v1 completion started (its first chunk read), not yet finished."""
    return await rig.service.complete(
        user_id=user, messages=[ChatMessage("user", "Hi")], params=rig.service.sampling_params()
    )


async def test_completions_count_against_the_budget_and_deleting_gives_nothing_back(
    db: DatabaseSettings,
) -> None:
    """The budget bypasses of issue 9: /v1 completions (never stored) and deleted replies
    used to escape the budget, which re-read the stored replies."""
    rig = Rig(db, budget=20)
    try:
        user, _ = await rig.conversation()
        await collect((await hi(rig, user)).chunks)  # 14 tokens, stored nowhere
        await collect((await hi(rig, user)).chunks)  # 28 of 20
        with pytest.raises(RateLimited, match="monthly token budget used up: 28 of 20"):
            await hi(rig, user)
        # a new replica reads the month from the ledger: the tokens are still spent
        await rig.usage.aclose()
        rig.usage = rig.service.usage = rig.meter(20)
        with pytest.raises(RateLimited, match="28 of 20"):
            await hi(rig, user)
    finally:
        await rig.close()


async def test_deleting_a_conversation_keeps_its_replies_in_the_budget(
    db: DatabaseSettings,
) -> None:
    rig = Rig(db, budget=20)
    try:
        user, conv = await rig.conversation()
        await ask(rig, user, conv, "First question", rag="off")
        await ask(rig, user, conv, "Second question", rag="off")  # 28 of 20 now
        await rig.service.delete_conversation(user_id=user, conversation_id=conv)
        await rig.usage.aclose()
        rig.usage = rig.service.usage = rig.meter(20)  # a fresh replica: nothing cached
        with pytest.raises(RateLimited, match="monthly token budget used up: 28 of 20"):
            await hi(rig, user)
    finally:
        await rig.close()


async def test_an_answer_abandoned_mid_stream_still_counts_what_was_generated(
    db: DatabaseSettings,
) -> None:
    rig = Rig(db, budget=1000)
    try:
        user, _ = await rig.conversation()
        rig.model.enqueue(Answer("one two three four five six seven eight"))
        answer = await hi(rig, user)
        await anext(answer.chunks)
        await anext(answer.chunks)
        await answer.chunks.aclose()  # the client went away after two words
        assert await rig.usage.used_this_month(user) == 2
        await rig.usage.ledger.flush()
        async with rig.sessionmaker() as session:
            from chatapp.usage.repository import month_start, usage_totals

            totals = await usage_totals(session=session, user_id=user, since=month_start())
        assert (totals.replies, totals.completion_tokens) == (1, 2)
    finally:
        await rig.close()


async def test_parallel_calls_hold_their_max_tokens_so_they_cannot_all_slip_under_the_budget(
    db: DatabaseSettings,
) -> None:
    """Checking the budget before a call and counting after let any number of parallel
    calls through; now each holds its max_tokens (32 here) until it ends."""
    rig = Rig(db, budget=40)
    try:
        user, _ = await rig.conversation()
        first, second = await hi(rig, user), await hi(rig, user)  # 32, then 64 held
        with pytest.raises(RateLimited, match="monthly token budget used up: 64 of 40"):
            await hi(rig, user)
        await collect(first.chunks)
        await collect(second.chunks)
        assert await rig.usage.used_this_month(user) == 28  # settled: what they used
        await collect((await hi(rig, user)).chunks)  # 28 < 40: one more
    finally:
        await rig.close()


async def test_a_user_has_a_bounded_number_of_replies_running_at_once(
    db: DatabaseSettings,
) -> None:
    rig = Rig(db, max_concurrent=2)
    try:
        user, conv = await rig.conversation()
        other_user, _ = await rig.conversation()
        first, second = await hi(rig, user), await hi(rig, user)
        with pytest.raises(RateLimited, match="too many replies at once: at most 2"):
            await hi(rig, user)
        with pytest.raises(RateLimited, match="too many replies at once"):
            await ask(rig, user, conv, "And me?", rag="off")
        assert await rig.stored(conv) == []  # refused before anything was stored
        await collect((await hi(rig, other_user)).chunks)  # other users are not affected
        await first.chunks.aclose()
        await collect((await hi(rig, user)).chunks)  # a slot is free again
        await collect(second.chunks)
    finally:
        await rig.close()


async def test_a_running_turn_keeps_renewing_its_hold_on_the_conversation(
    db: DatabaseSettings,
) -> None:
    """While an answer streams, the service renews the turn's lease (every third of
    SHARDS_TURN_LEASE_S), so a second message still gets 409 after the lease would have
    run out; the store's clock is moved by hand, only the renewal period is real time."""

    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    engine = make_engine(db)
    sessionmaker = make_sessionmaker(engine)
    store = ConversationStore(
        sessionmaker=sessionmaker,
        hot_turns=20,
        max_hot=100,
        idle_timeout_s=600,
        turn_lease_s=15,
        clock=clock,
    )
    renewed = asyncio.Event()
    renew = store.renew_turn

    async def renew_and_tell(**kw: Any) -> None:
        await renew(**kw)
        renewed.set()

    store.renew_turn = renew_and_tell  # type: ignore[method-assign]
    slow = ScriptedProvider("self-hosted", Answer("a slow answer", delay_s=60))
    settings = SETTINGS.model_copy(
        update={"shards": SETTINGS.shards.model_copy(update={"turn_lease_s": 0.3})}
    )
    service = ChatService(
        settings=settings, shards=store, router=build_router(settings, {"self-hosted": slow})
    )
    try:
        async with sessionmaker() as session:
            user = (await create_user(session)).id
            conv = (await repository.create_conversation(session=session, user_id=user)).id
        turn = await service.post_message(
            user_id=user, conversation_id=conv, body=MessageCreate(content="Hi", rag="off")
        )
        assert isinstance(await anext(turn), TurnStarted)
        waiting = asyncio.ensure_future(anext(turn))  # the model has not answered yet
        clock.now += 20  # past the lease: only a renewal keeps the conversation held
        renewed.clear()
        await asyncio.wait_for(renewed.wait(), 30)  # bounds a missing renewal, not a race
        with pytest.raises(Conflict, match="still being generated"):
            await store.begin_turn(conversation_id=conv, user_id=user, content="again")
        waiting.cancel()  # the client goes away: the turn ends (and is undone)
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await turn.aclose()
    finally:
        await engine.dispose()


async def test_a_message_posted_again_with_its_idempotency_key_gets_the_same_turn_back(
    rig: Rig,
) -> None:
    """A client whose response was lost (a dead connection, a killed replica) posts again
    with the same Idempotency-Key: it gets the stored turn, not a second one."""
    user, conv = await rig.conversation()
    first = await ask(rig, user, conv, "How much leave?", rag="off", idempotency_key="k-1")
    again = await ask(rig, user, conv, "How much leave?", rag="off", idempotency_key="k-1")
    assert isinstance(first[0], TurnStarted) and not first[0].replayed
    assert isinstance(again[0], TurnStarted) and again[0].replayed
    assert again[0].user_message.id == first[0].user_message.id
    done, replayed = first[-1], again[-1]
    assert isinstance(done, TurnDone) and isinstance(replayed, TurnDone)
    assert replayed.message.id == done.message.id
    assert "".join(e.text for e in again if isinstance(e, TextDelta)) == done.message.content
    assert len(rig.model.history) == 1  # the model answered once
    assert await rig.stored(conv) == [
        ("user", "How much leave?", "complete"),
        ("assistant", "Thirty days of leave.", "complete"),
    ]
    # A new key is a new message.
    await ask(rig, user, conv, "How much leave?", rag="off", idempotency_key="k-2")
    assert len(await rig.stored(conv)) == 4


async def test_an_idempotency_key_used_for_another_message_is_refused(rig: Rig) -> None:
    user, conv = await rig.conversation()
    await ask(rig, user, conv, "First", rag="off", idempotency_key="same")
    with pytest.raises(InvalidRequest, match="Idempotency-Key: this key was already used"):
        await ask(rig, user, conv, "Second", rag="off", idempotency_key="same")
    assert [c for _, c, _ in await rig.stored(conv)] == ["First", "Thirty days of leave."]


async def test_a_retried_edit_with_its_key_is_not_made_twice(rig: Rig) -> None:
    user, conv = await rig.conversation()
    await ask(rig, user, conv, "Name a fruit.", rag="off")
    rig.model.enqueue(Answer("Carrot."))
    edit = {"rag": "off", "replace_from_seq": 0, "idempotency_key": "edit-1"}
    await ask(rig, user, conv, "Name a vegetable.", **edit)
    again = await ask(rig, user, conv, "Name a vegetable.", **edit)
    assert isinstance(again[0], TurnStarted) and again[0].replayed
    assert await rig.stored(conv) == [
        ("user", "Name a vegetable.", "complete"),
        ("assistant", "Carrot.", "complete"),
    ]
    # The edit's undo keeps the keys of what it puts back.
    rig.model.enqueue(ProviderAuth("down"))
    with pytest.raises(ProviderAuth):
        await ask(rig, user, conv, "Name a mineral.", rag="off", replace_from_seq=0)
    again = await ask(rig, user, conv, "Name a vegetable.", **edit)
    assert isinstance(again[0], TurnStarted) and again[0].replayed


async def test_a_keyed_turn_is_409_while_it_runs_and_answered_on_retry_once_its_owner_died(
    db: DatabaseSettings,
) -> None:
    """The ingress replica running a turn is killed after the question was stored: while
    the turn's lease lasts, a retry with the key gets 409; after it, the retry answers the
    stored question (once: no second user message)."""

    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    rig = Rig(db)
    store = ConversationStore(
        sessionmaker=rig.sessionmaker,
        hot_turns=20,
        max_hot=100,
        idle_timeout_s=600,
        turn_lease_s=10,
        clock=clock,
    )
    router = build_router(SETTINGS, {"self-hosted": rig.model})
    service = ChatService(settings=SETTINGS, shards=store, router=router)
    try:
        user, conv = await rig.conversation()
        # The dead replica's turn: the question stored, never answered nor renewed.
        await store.begin_turn(
            conversation_id=conv, user_id=user, content="Are you there?", idempotency_key="r"
        )
        body = MessageCreate(content="Are you there?", rag="off")
        turn = await service.post_message(
            user_id=user, conversation_id=conv, body=body, idempotency_key="r"
        )
        clock.now += 4
        with pytest.raises(Conflict, match="still being answered") as refused:
            await anext(turn)
        assert refused.value.retry_after == 6  # when the dead turn's lease runs out
        clock.now += 7  # the lease ran out
        turn = await service.post_message(
            user_id=user, conversation_id=conv, body=body, idempotency_key="r"
        )
        events = [event async for event in turn]
        assert isinstance(events[0], TurnStarted) and not events[0].replayed
        assert isinstance(events[-1], TurnDone)
        assert await rig.stored(conv) == [
            ("user", "Are you there?", "complete"),
            ("assistant", "Thirty days of leave.", "complete"),
        ]
        _, prompt = rig.model.history[-1]
        assert [m.content for m in prompt[1:]] == ["Are you there?"]
    finally:
        await rig.close()


async def test_a_turn_is_measured_as_its_user_sees_it(db: DatabaseSettings) -> None:
    """Time to first token, duration, tokens, retrieval and refusals are recorded per turn."""
    from chatapp.observability.metrics import PrometheusInstruments, TurnMetrics

    rig = Rig(db, budget=20)
    instruments = PrometheusInstruments()
    rig.service = ChatService(
        settings=SETTINGS,
        shards=ConversationStore(
            sessionmaker=rig.sessionmaker, hot_turns=20, max_hot=100, idle_timeout_s=600
        ),
        router=build_router(SETTINGS, {"self-hosted": rig.model}),
        retriever=rig.handbook,
        usage=rig.usage,
        metrics=TurnMetrics(instruments),
    )

    def sample(name: str, **labels: str) -> float:
        return instruments.registry.get_sample_value(name, labels) or 0.0

    try:
        user, conv = await rig.conversation()
        await ask(rig, user, conv, "How much leave?", rag="always")
        await ask(rig, user, conv, "And more?", rag="off")
        with pytest.raises(RateLimited):
            await ask(rig, user, conv, "Third", rag="off")
        assert sample("chatapp_turn_time_to_first_token_seconds_count", kind="chat") == 2
        assert sample("chatapp_turn_duration_seconds_count", kind="chat", outcome="complete") == 2
        assert sample("chatapp_turn_tokens_total", kind="chat", direction="completion") == 8
        assert sample("chatapp_retrieval_duration_seconds_count", outcome="ok") == 1
        assert sample("chatapp_retrieval_hits_total") == 1
        assert sample("chatapp_budget_refusals_total", limit="monthly_budget") == 1
    finally:
        await rig.close()


async def test_a_shard_counts_its_hot_conversations_writes_and_conflicts(rig: Rig) -> None:
    from chatapp.observability.metrics import PrometheusInstruments, ShardMetrics

    instruments = PrometheusInstruments()
    store = ConversationStore(
        sessionmaker=rig.sessionmaker,
        hot_turns=20,
        max_hot=1,
        idle_timeout_s=600,
        metrics=ShardMetrics(instruments),
    )

    def sample(name: str, **labels: str) -> float:
        return instruments.registry.get_sample_value(name, labels) or 0.0

    user, conv = await rig.conversation()
    other_user, other = await rig.conversation()
    await store.begin_turn(conversation_id=conv, user_id=user, content="Hi")
    with pytest.raises(Conflict):
        await store.begin_turn(conversation_id=conv, user_id=user, content="Hi again")
    assert sample("chatapp_shard_hot_conversations") == 1
    assert sample("chatapp_shard_activations_total") == 1
    assert sample("chatapp_shard_write_duration_seconds_count", role="user") == 1
    assert sample("chatapp_shard_conflicts_total", kind="busy") == 1
    await store.finish_turn(
        conversation_id=conv,
        user_id=user,
        reply=ReplyRecord(content="Hello.", status="complete", finish_reason="stop"),
    )
    await store.begin_turn(conversation_id=other, user_id=other_user, content="Hey")
    # one conversation may stay hot: the idle one was passivated for the new one
    assert sample("chatapp_shard_hot_conversations") == 1
    assert sample("chatapp_shard_passivations_total", reason="capacity") == 1
    assert sample("chatapp_shard_write_duration_seconds_count", role="assistant") == 1
