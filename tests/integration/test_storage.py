"""Conversation storage on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chatapp.chat import repository
from chatapp.chat.ports import ReplyRecord
from chatapp.errors import Conflict, InvalidRequest, NotFound
from tests.fakes.users import create_user


async def new_user(sessionmaker: Any) -> uuid.UUID:
    async with sessionmaker() as session:
        user = await create_user(session)
        return user.id


async def test_messages_are_kept_in_order_and_paged(sessionmaker: Any) -> None:
    user_id = await new_user(sessionmaker)
    async with sessionmaker() as session:
        conv = await repository.create_conversation(session=session, user_id=user_id, title="t")
        for seq in range(7):
            await repository.append_message(
                session=session,
                conversation_id=conv.id,
                seq=seq,
                message=f"m{seq}"
                if seq % 2 == 0
                else ReplyRecord(content=f"m{seq}", status="complete", finish_reason="stop"),
            )
    async with sessionmaker() as session:
        newest, more = await repository.list_messages(
            session=session, conversation_id=conv.id, limit=3
        )
        assert [m.content for m in newest] == ["m4", "m5", "m6"] and more
        older, more = await repository.list_messages(
            session=session, conversation_id=conv.id, limit=3, before=newest[0].seq
        )
        assert [m.content for m in older] == ["m1", "m2", "m3"] and more
        oldest, more = await repository.list_messages(
            session=session, conversation_id=conv.id, limit=3, before=older[0].seq
        )
        assert [m.content for m in oldest] == ["m0"] and not more


async def test_a_stale_writer_gets_a_conflict_and_history_is_unchanged(sessionmaker: Any) -> None:
    user_id = await new_user(sessionmaker)
    async with sessionmaker() as session:
        conv = await repository.create_conversation(session=session, user_id=user_id)
        await repository.append_message(
            session=session, conversation_id=conv.id, seq=0, message="original"
        )
    async with sessionmaker() as session:
        with pytest.raises(Conflict, match="already written"):
            await repository.append_message(
                session=session, conversation_id=conv.id, seq=0, message="overwrite"
            )
    async with sessionmaker() as session:
        rows, _ = await repository.list_messages(session=session, conversation_id=conv.id, limit=10)
        assert [(m.seq, m.content) for m in rows] == [(0, "original")]


async def test_conversations_list_newest_first_by_cursor(sessionmaker: Any) -> None:
    user_id = await new_user(sessionmaker)
    other = await new_user(sessionmaker)
    async with sessionmaker() as session:
        ids = []
        for i in range(5):
            conv = await repository.create_conversation(
                session=session, user_id=user_id, title=f"c{i}"
            )
            ids.append(conv.id)
        await repository.create_conversation(session=session, user_id=other, title="not mine")
        # activity moves a conversation to the top
        await repository.append_message(
            session=session, conversation_id=ids[1], seq=0, message="bump"
        )
    async with sessionmaker() as session:
        seen, cursor = [], None
        while True:
            page, cursor = await repository.list_conversations(
                session=session, user_id=user_id, limit=2, cursor=cursor
            )
            seen += [c.title for c in page]
            if cursor is None:
                break
        assert seen == ["c1", "c4", "c3", "c2", "c0"]
        with pytest.raises(InvalidRequest, match="invalid cursor"):
            await repository.list_conversations(
                session=session, user_id=user_id, limit=2, cursor="garbage!"
            )


async def test_other_users_conversation_is_not_found_and_delete_removes_messages(
    sessionmaker: Any,
) -> None:
    owner = await new_user(sessionmaker)
    intruder = await new_user(sessionmaker)
    async with sessionmaker() as session:
        conv = await repository.create_conversation(session=session, user_id=owner)
        await repository.append_message(
            session=session, conversation_id=conv.id, seq=0, message="secret"
        )
    async with sessionmaker() as session:
        with pytest.raises(NotFound):
            await repository.get_conversation(
                session=session, user_id=intruder, conversation_id=conv.id
            )
        with pytest.raises(NotFound):
            await repository.delete_conversation(
                session=session, user_id=intruder, conversation_id=conv.id
            )
        await repository.delete_conversation(
            session=session, user_id=owner, conversation_id=conv.id
        )
    async with sessionmaker() as session:
        rows, _ = await repository.list_messages(session=session, conversation_id=conv.id, limit=10)
        assert rows == []
        with pytest.raises(NotFound):
            await repository.get_conversation(
                session=session, user_id=owner, conversation_id=conv.id
            )
