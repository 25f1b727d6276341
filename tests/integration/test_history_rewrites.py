"""Search, edit-and-resend and regenerate in the core (SQLite and PostgreSQL): history is
rewritten only through the conversation's store, atomically, and undone when the new
turn produces nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chatapp.chat import repository
from chatapp.chat.ports import ReplyRecord
from chatapp.errors import Conflict, InvalidRequest
from tests.fakes.users import create_user
from tests.integration.test_hot_store import setup, store, turn


async def contents(sessionmaker: Any, conv_id: uuid.UUID) -> list[tuple[int, str, str]]:
    async with sessionmaker() as session:
        rows, _ = await repository.list_messages(
            session=session, conversation_id=conv_id, limit=100
        )
    return [(r.seq, r.role, r.content) for r in rows]


async def test_search_matches_title_or_content_ignoring_case(sessionmaker: Any) -> None:
    user_id, first = await setup(sessionmaker)
    s = store(sessionmaker)
    await turn(s, user_id, first, "Tell me about the Zebrafish genome")
    async with sessionmaker() as session:
        second = await repository.create_conversation(
            session=session, user_id=user_id, title="Notes on ZEBRAFISH"
        )
        other = await repository.create_conversation(
            session=session, user_id=user_id, title="100% literal_match"
        )
        stranger = await create_user(session)
        await repository.create_conversation(
            session=session, user_id=stranger.id, title="zebrafish too"
        )

        async def search(q: str, limit: int = 10, cursor: str | None = None) -> Any:
            return await repository.list_conversations(
                session=session, user_id=user_id, limit=limit, cursor=cursor, q=q
            )

        rows, _ = await search("zebraFISH")
        assert {r.id for r in rows} == {first, second.id}  # never another user's
        rows, _ = await search("re: tell me")  # the reply's text
        assert [r.id for r in rows] == [first]
        # LIKE wildcards are taken literally
        assert [r.id for r in (await search("0% lit"))[0]] == [other.id]
        assert (await search("1_0"))[0] == []
        assert (await search("literal_m"))[0][0].id == other.id
        # still paged, newest first
        page, cursor = await search("zebrafish", limit=1)
        assert [r.id for r in page] == [second.id] and cursor
        page, cursor = await search("zebrafish", limit=1, cursor=cursor)
        assert [r.id for r in page] == [first] and cursor is None


async def test_edit_replaces_history_from_a_user_message(sessionmaker: Any) -> None:
    user_id, conv_id = await setup(sessionmaker)
    s = store(sessionmaker)
    await turn(s, user_id, conv_id, "one")
    await turn(s, user_id, conv_id, "two")

    await s.prepare_rewrite(conversation_id=conv_id, user_id=user_id, from_seq=2, content="TWO")
    start = await s.begin_turn(conversation_id=conv_id, user_id=user_id, content="TWO")
    assert start.user_message.seq == 2 and start.reply_seq == 3
    assert [m.content for m in start.history] == ["one", "re: one", "TWO"]
    await s.finish_turn(
        conversation_id=conv_id,
        user_id=user_id,
        reply=ReplyRecord(
            content="re: TWO",
            status="complete",
            finish_reason="stop",
            model="m",
            prompt_tokens=1,
            completion_tokens=1,
        ),
    )
    assert await contents(sessionmaker, conv_id) == [
        (0, "user", "one"),
        (1, "assistant", "re: one"),
        (2, "user", "TWO"),
        (3, "assistant", "re: TWO"),
    ]
    # the hot copy follows: the next turn appends at 4 with the edited history
    start = await turn(s, user_id, conv_id, "three")
    assert start.user_message.seq == 4
    assert [m.content for m in start.history][-3:] == ["TWO", "re: TWO", "three"]


async def test_regenerate_reruns_the_last_user_message(sessionmaker: Any) -> None:
    user_id, conv_id = await setup(sessionmaker)
    s = store(sessionmaker)
    await turn(s, user_id, conv_id, "question")
    content = await s.prepare_regenerate(conversation_id=conv_id, user_id=user_id)
    assert content == "question"
    await turn(s, user_id, conv_id, content)
    assert await contents(sessionmaker, conv_id) == [
        (0, "user", "question"),
        (1, "assistant", "re: question"),
    ]


@pytest.mark.parametrize("seq", [1, 2, 99])
async def test_bad_seq_is_rejected_and_changes_nothing(sessionmaker: Any, seq: int) -> None:
    user_id, conv_id = await setup(sessionmaker)
    s = store(sessionmaker)
    await turn(s, user_id, conv_id, "only")
    with pytest.raises(InvalidRequest):
        await s.prepare_rewrite(conversation_id=conv_id, user_id=user_id, from_seq=seq, content="x")
    start = await turn(s, user_id, conv_id, "next")  # an ordinary append, not a rewrite
    assert start.user_message.seq == 2
    assert len(await contents(sessionmaker, conv_id)) == 4


async def test_regenerate_needs_a_message(sessionmaker: Any) -> None:
    user_id, conv_id = await setup(sessionmaker)
    with pytest.raises(InvalidRequest):
        await store(sessionmaker).prepare_regenerate(conversation_id=conv_id, user_id=user_id)


async def test_a_rewrite_is_refused_while_a_reply_is_generated(sessionmaker: Any) -> None:
    user_id, conv_id = await setup(sessionmaker)
    s = store(sessionmaker)
    await s.begin_turn(conversation_id=conv_id, user_id=user_id, content="busy")
    with pytest.raises(Conflict):
        await s.prepare_rewrite(conversation_id=conv_id, user_id=user_id, from_seq=0, content="x")
    with pytest.raises(Conflict):
        await s.prepare_regenerate(conversation_id=conv_id, user_id=user_id)


async def test_other_content_cannot_take_a_prepared_rewrite(sessionmaker: Any) -> None:
    user_id, conv_id = await setup(sessionmaker)
    s = store(sessionmaker)
    await turn(s, user_id, conv_id, "one")
    await s.prepare_rewrite(conversation_id=conv_id, user_id=user_id, from_seq=0, content="edited")
    with pytest.raises(Conflict):
        await s.begin_turn(conversation_id=conv_id, user_id=user_id, content="another tab")
    assert len(await contents(sessionmaker, conv_id)) == 2


async def test_a_rewrite_whose_turn_produced_nothing_is_undone(sessionmaker: Any) -> None:
    user_id, conv_id = await setup(sessionmaker)
    s = store(sessionmaker)
    await turn(s, user_id, conv_id, "one")
    await turn(s, user_id, conv_id, "two")
    before = await contents(sessionmaker, conv_id)
    async with sessionmaker() as session:
        updated_before = (
            await repository.get_conversation(
                session=session, user_id=user_id, conversation_id=conv_id
            )
        ).updated_at

    await s.prepare_rewrite(conversation_id=conv_id, user_id=user_id, from_seq=0, content="new")
    start = await s.begin_turn(conversation_id=conv_id, user_id=user_id, content="new")
    assert await contents(sessionmaker, conv_id) == [(0, "user", "new")]
    # the model failed before its first token: the ingress undoes the turn
    await s.abort_turn(conversation_id=conv_id, user_id=user_id, user_seq=start.user_message.seq)

    assert await contents(sessionmaker, conv_id) == before
    async with sessionmaker() as session:
        conversation = await repository.get_conversation(
            session=session, user_id=user_id, conversation_id=conv_id
        )
        assert conversation.updated_at == updated_before
    start = await turn(s, user_id, conv_id, "three")
    assert start.user_message.seq == 4
    assert [m.content for m in start.history] == ["one", "re: one", "two", "re: two", "three"]
