"""Hot conversations: activation from SQL, passivation, capacity, stale writers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chatapp.chat import repository
from chatapp.chat.hot import ConversationStore
from chatapp.chat.ports import ReplyRecord
from chatapp.errors import Conflict, NotFound
from tests.fakes.users import create_user


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store(sessionmaker: Any, clock: Clock | None = None, **kw: Any) -> ConversationStore:
    return ConversationStore(
        sessionmaker=sessionmaker,
        hot_turns=kw.get("hot_turns", 16),
        max_hot=kw.get("max_hot", 100),
        idle_timeout_s=kw.get("idle_timeout_s", 60),
        max_hot_bytes=kw.get("max_hot_bytes", 1 << 30),
        turn_lease_s=kw.get("turn_lease_s", 15),
        clock=clock or Clock(),
    )


async def setup(sessionmaker: Any) -> tuple[uuid.UUID, uuid.UUID]:
    async with sessionmaker() as session:
        user = await create_user(session)
        conv = await repository.create_conversation(session=session, user_id=user.id)
    return user.id, conv.id


async def turn(s: ConversationStore, user_id: uuid.UUID, conv_id: uuid.UUID, text: str) -> Any:
    start = await s.begin_turn(conversation_id=conv_id, user_id=user_id, content=text)
    await s.finish_turn(
        conversation_id=conv_id,
        user_id=user_id,
        reply=ReplyRecord(
            content=f"re: {text}",
            status="complete",
            finish_reason="stop",
            model="m",
            prompt_tokens=1,
            completion_tokens=1,
        ),
    )
    return start


async def test_write_through_and_reactivation_after_passivation(sessionmaker: Any) -> None:
    clock = Clock()
    s = store(sessionmaker, clock, idle_timeout_s=60)
    user_id, conv_id = await setup(sessionmaker)
    first = await turn(s, user_id, conv_id, "hello there")
    assert [m.content for m in first.history] == ["hello there"]
    clock.now += 61
    assert s.passivate_idle() == 1 and s.hot_ids() == []
    second = await turn(s, user_id, conv_id, "again")
    assert [m.content for m in second.history] == ["hello there", "re: hello there", "again"]
    assert second.user_message.seq == 2
    async with sessionmaker() as session:
        conv = await repository.get_conversation(
            session=session, user_id=user_id, conversation_id=conv_id
        )
        assert conv.title == "hello there"  # titled from the first message


async def test_capacity_passivates_least_recently_used(sessionmaker: Any) -> None:
    s = store(sessionmaker, max_hot=2)
    convs = [await setup(sessionmaker) for _ in range(3)]
    for user_id, conv_id in convs:
        await turn(s, user_id, conv_id, "hi")
    assert s.hot_ids() == [convs[1][1], convs[2][1]]


async def test_one_turn_at_a_time_per_conversation(sessionmaker: Any) -> None:
    s = store(sessionmaker)
    user_id, conv_id = await setup(sessionmaker)
    await s.begin_turn(conversation_id=conv_id, user_id=user_id, content="first")
    with pytest.raises(Conflict, match="still being generated"):
        await s.begin_turn(conversation_id=conv_id, user_id=user_id, content="second")


async def test_a_conversation_that_moved_shards_and_back_continues_without_an_error(
    sessionmaker: Any,
) -> None:
    """The shard count changed twice: the old shard's hot copy is stale. Its write fails on
    the (conversation, seq) guard, the copy is dropped and the turn starts again from SQL:
    nothing overwritten, nothing duplicated, no error for the user."""
    user_id, conv_id = await setup(sessionmaker)
    old, new = store(sessionmaker), store(sessionmaker)
    await turn(old, user_id, conv_id, "one")  # old shard holds the conversation hot
    await turn(new, user_id, conv_id, "two")  # after a reshard, a new owner writes on
    again = await turn(old, user_id, conv_id, "three")  # and back to the old shard
    assert again.user_message.seq == 4
    assert [m.content for m in again.history] == ["one", "re: one", "two", "re: two", "three"]
    async with sessionmaker() as session:
        rows, _ = await repository.list_messages(session=session, conversation_id=conv_id, limit=10)
    assert [(m.seq, m.content) for m in rows] == list(
        enumerate(["one", "re: one", "two", "re: two", "three", "re: three"])
    )


async def test_a_stale_reply_is_refused_never_stored_twice(sessionmaker: Any) -> None:
    user_id, conv_id = await setup(sessionmaker)
    old, new = store(sessionmaker), store(sessionmaker)
    await old.begin_turn(conversation_id=conv_id, user_id=user_id, content="one")
    await turn(new, user_id, conv_id, "two")  # took seq 1 and 2 meanwhile
    reply = ReplyRecord(content="late", status="complete", finish_reason="stop")
    with pytest.raises(Conflict):
        await old.finish_turn(conversation_id=conv_id, user_id=user_id, reply=reply)
    async with sessionmaker() as session:
        rows, _ = await repository.list_messages(session=session, conversation_id=conv_id, limit=10)
    assert [m.content for m in rows] == ["one", "two", "re: two"]


async def test_a_turn_whose_owner_died_frees_its_conversation_when_its_lease_ends(
    sessionmaker: Any,
) -> None:
    """A turn orphaned by its ingress's death used to hold its conversation for 15 minutes
    (409 to every message); now it holds it for the lease, which the owner renews."""
    clock = Clock()
    s = store(sessionmaker, clock, turn_lease_s=15)
    user_id, conv_id = await setup(sessionmaker)
    await s.begin_turn(conversation_id=conv_id, user_id=user_id, content="first")
    clock.now += 10
    with pytest.raises(Conflict, match="still being generated"):
        await s.begin_turn(conversation_id=conv_id, user_id=user_id, content="second")
    await s.renew_turn(conversation_id=conv_id, user_id=user_id)  # the owner is alive
    clock.now += 10
    with pytest.raises(Conflict, match="still being generated"):
        await s.begin_turn(conversation_id=conv_id, user_id=user_id, content="second")
    clock.now += 6  # no renewal for longer than the lease: the owner is gone
    start = await s.begin_turn(conversation_id=conv_id, user_id=user_id, content="second")
    assert start.user_message.seq == 1


async def test_abort_undoes_the_turn(sessionmaker: Any) -> None:
    s = store(sessionmaker)
    user_id, conv_id = await setup(sessionmaker)
    async with sessionmaker() as session:
        created = await repository.get_conversation(
            session=session, user_id=user_id, conversation_id=conv_id
        )
        updated_before = created.updated_at
    start = await s.begin_turn(conversation_id=conv_id, user_id=user_id, content="doomed")
    await s.abort_turn(conversation_id=conv_id, user_id=user_id, user_seq=start.user_message.seq)
    async with sessionmaker() as session:
        rows, _ = await repository.list_messages(session=session, conversation_id=conv_id, limit=10)
        conv = await repository.get_conversation(
            session=session, user_id=user_id, conversation_id=conv_id
        )
    assert rows == [] and conv.title == ""
    assert conv.updated_at == updated_before  # the sidebar order is unchanged too
    after = await turn(s, user_id, conv_id, "fine")
    assert after.user_message.seq == 0 and [m.content for m in after.history] == ["fine"]


async def test_someone_elses_conversation_is_not_found(sessionmaker: Any) -> None:
    s = store(sessionmaker)
    user_id, conv_id = await setup(sessionmaker)
    await turn(s, user_id, conv_id, "mine")
    with pytest.raises(NotFound):
        await s.begin_turn(conversation_id=conv_id, user_id=uuid.uuid4(), content="hijack")


async def test_long_chats_are_bounded_by_memory_and_lose_nothing(sessionmaker: Any) -> None:
    """Hot conversations are passivated by their size too, least recent first; a
    passivated chat comes back whole from SQL."""
    s = store(sessionmaker, max_hot_bytes=50_000)
    essay = "x" * 9_000  # each turn keeps ~18 kB hot (question and its echoed reply)
    chats = [await setup(sessionmaker) for _ in range(3)]
    for user_id, conv_id in chats:
        await turn(s, user_id, conv_id, f"{conv_id} {essay}")
    assert s.hot_bytes() <= 50_000
    assert s.hot_ids() == [chats[1][1], chats[2][1]]  # the least recent went first
    user_id, conv_id = chats[0]
    again = await turn(s, user_id, conv_id, "and now?")
    assert again.user_message.seq == 2
    assert [m.content for m in again.history] == [
        f"{conv_id} {essay}",
        f"re: {conv_id} {essay}",
        "and now?",
    ]
    assert s.hot_bytes() <= 50_000 and conv_id in s.hot_ids()


async def test_unknown_conversations_leave_nothing_behind(sessionmaker: Any) -> None:
    """Asking for ids that do not exist (an attacker's scan) must not grow the shard."""
    s = store(sessionmaker)
    user_id, _ = await setup(sessionmaker)
    for _ in range(50):
        with pytest.raises(NotFound):
            await s.begin_turn(conversation_id=uuid.uuid4(), user_id=user_id, content="hi")
    assert s.hot_ids() == [] and s.hot_bytes() == 0
    assert s._activating == {}  # no activation lock per unknown id
