"""Conversation export and import (issue 14) in the core, on SQLite and PostgreSQL: an
export imported and exported again is the same file apart from new ids; imports make new
conversations of the importing user, whose next turn continues them; a refused file
stores nothing; shares are snapshots that die with their link or conversation."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from chatapp.auth.tokens import hash_secret
from chatapp.chat import repository, sharing
from chatapp.chat.transfer import export_conversations, import_conversations
from chatapp.chat.transfer_formats import ImportLimits, parse_import
from chatapp.db.models import Conversation, ConversationShare, Message, UsageEvent, User
from chatapp.errors import InvalidRequest, NotFound
from tests.fakes.chatgpt_export import branched_sample
from tests.integration.chat_data import Chats

LIMITS = ImportLimits(max_bytes=10**7, max_conversations=1000, max_messages=10_000)


async def _export(sessionmaker: Any, user_id: uuid.UUID, **kwargs: Any) -> bytes:
    chunks = [
        c
        async for c in export_conversations(
            sessionmaker=sessionmaker, user_id=user_id, page_size=2, chunk_bytes=512, **kwargs
        )
    ]
    return b"".join(chunks)


def _without_ids(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            **{k: v for k, v in c.items() if k != "id"},
            "messages": [{k: v for k, v in m.items() if k != "id"} for m in c["messages"]],
        }
        for c in document["conversations"]
    ]


def _ids(document: dict[str, Any]) -> set[str]:
    return {c["id"] for c in document["conversations"]} | {
        m["id"] for c in document["conversations"] for m in c["messages"]
    }


async def _import(sessionmaker: Any, user: User, data: bytes) -> Any:
    async with sessionmaker() as session:
        return await import_conversations(
            session=session, user_id=user.id, conversations=parse_import(data, limits=LIMITS)
        )


async def test_export_import_export_is_the_same_apart_from_new_ids(sessionmaker: Any) -> None:
    chats = Chats(sessionmaker)
    try:
        alice, bob = await chats.user("alice"), await chats.user("bob")
        # 0 to 6 messages: pages of 2 rows are empty, one, two full and three
        mine = await chats.chats(alice, [0, 1, 2, 3], "alice-marker")
        await chats.chats(bob, [1], "bob-marker")
        await chats.usage.ledger.flush()
        async with sessionmaker() as session:
            usage_before = await session.scalar(select(func.count()).select_from(UsageEvent))

        exported = await _export(sessionmaker, alice.id, fmt="json")
        document = json.loads(exported)
        assert [c["id"] for c in document["conversations"]] == [str(c) for c in reversed(mine)]
        assert [len(c["messages"]) for c in document["conversations"]] == [6, 4, 2, 0]
        assert b"bob-marker" not in exported

        # imported into the same account: new conversations beside the old ones
        result = await _import(sessionmaker, alice, exported)
        assert result.messages == 12
        assert [c.messages for c in result.conversations] == [6, 4, 2, 0]
        await chats.usage.ledger.flush()
        new_ids = {c.id for c in result.conversations}
        assert not new_ids & set(mine)
        async with sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(UsageEvent)) == (
                usage_before
            ), "an import ran no model: no usage"
            rows, _ = await repository.list_conversations(
                session=session, user_id=alice.id, limit=100
            )
            assert {r.id for r in rows} == set(mine) | new_ids
            for conversation in result.conversations:
                seqs = await session.scalars(
                    select(Message.seq)
                    .where(Message.conversation_id == conversation.id)
                    .order_by(Message.seq)
                )
                assert list(seqs) == list(range(conversation.messages))

        again = json.loads(await _export(sessionmaker, alice.id, fmt="json"))
        copies = [c for c in again["conversations"] if uuid.UUID(c["id"]) in new_ids]
        originals = [c for c in again["conversations"] if uuid.UUID(c["id"]) in set(mine)]
        assert _without_ids({"conversations": copies}) == _without_ids(document)
        assert _without_ids({"conversations": originals}) == _without_ids(document)
        assert not _ids({"conversations": copies}) & _ids(document)

        # one conversation: the same, on its own
        longest = result.conversations[0].id
        one = json.loads(await _export(sessionmaker, alice.id, fmt="json", conversation_id=longest))
        assert _without_ids(one) == _without_ids(document)[:1]

        # the imported conversation goes on like any other
        await chats.turn(alice, longest, "and one more question")
        async with sessionmaker() as session:
            rows, _ = await repository.list_messages(
                session=session, conversation_id=longest, limit=100
            )
        assert [r.seq for r in rows] == list(range(8))
        assert rows[-2].content == "and one more question"
    finally:
        await chats.aclose()


async def test_markdown_export_and_foreign_conversations(sessionmaker: Any) -> None:
    chats = Chats(sessionmaker)
    try:
        alice, bob = await chats.user("alice"), await chats.user("bob")
        (conversation,) = await chats.chats(alice, [2], "alice-marker")
        text = (
            await _export(sessionmaker, alice.id, fmt="markdown", conversation_id=conversation)
        ).decode()
        with pytest.raises(NotFound):
            await _export(sessionmaker, bob.id, fmt="markdown", conversation_id=conversation)
        with pytest.raises(NotFound):
            await _export(sessionmaker, alice.id, fmt="json", conversation_id=uuid.uuid4())
    finally:
        await chats.aclose()
    assert text.startswith("# alice-marker chat 0\n")
    assert text.count("**User** · ") == 2 and text.count("**Assistant** (") == 2
    assert "alice-marker question 0.1: why?" in text
    assert "A scripted answer, ünïcödé ✓." in text


async def test_a_chatgpt_export_becomes_new_conversations(sessionmaker: Any) -> None:
    chats = Chats(sessionmaker)
    try:
        carol = await chats.user("carol")
        result = await _import(sessionmaker, carol, json.dumps(branched_sample()).encode())
        assert [(c.title, c.messages) for c in result.conversations] == [
            ("Quokka facts", 4),
            ("", 2),
        ]
        async with sessionmaker() as session:
            rows, _ = await repository.list_messages(
                session=session, conversation_id=result.conversations[0].id, limit=10
            )
        assert [(r.seq, r.role, r.content, r.model) for r in rows] == [
            (0, "user", "Where do quokkas live?", None),
            (1, "assistant", "On Rottnest Island\nand Bald Island.", "gpt-4o"),
            (2, "user", "What is in this photo?", None),
            (3, "assistant", "A quokka, smiling.", "gpt-4o"),
        ]
    finally:
        await chats.aclose()


async def test_a_refused_file_stores_nothing(sessionmaker: Any) -> None:
    chats = Chats(sessionmaker)
    try:
        dave = await chats.user("dave")

        async def counts() -> tuple[int | None, int | None]:
            async with sessionmaker() as session:
                conversations = select(func.count()).select_from(Conversation)
                messages = select(func.count()).select_from(Message)
                return await session.scalar(conversations), await session.scalar(messages)

        before = await counts()
        sample = branched_sample()
        sample.append({"title": "broken", "mapping": {}, "current_node": "nowhere"})
        with pytest.raises(InvalidRequest, match=r"\[2\]\.mapping: node 'nowhere'"):
            await _import(sessionmaker, dave, json.dumps(sample).encode())
        # a write that fails halfway (here: an owner that does not exist) rolls back whole
        ghost = User(id=uuid.uuid4(), email="ghost@example.com")
        with pytest.raises(Exception):  # noqa: B017  # the database's own error
            await _import(sessionmaker, ghost, json.dumps(branched_sample()).encode())
        assert await counts() == before
    finally:
        await chats.aclose()


async def test_a_share_is_a_snapshot_that_goes_with_its_link(sessionmaker: Any) -> None:
    chats = Chats(sessionmaker)
    try:
        alice, bob = await chats.user("alice"), await chats.user("bob")
        first, second = await chats.chats(alice, [1, 1], "alice-marker")
        async with sessionmaker() as session:
            link = await sharing.create_share(
                session=session, user_id=alice.id, conversation_id=first
            )
            other = await sharing.create_share(
                session=session, user_id=alice.id, conversation_id=second
            )
            with pytest.raises(NotFound):
                await sharing.create_share(session=session, user_id=bob.id, conversation_id=first)
        await chats.turn(alice, first, "a later question")
        async with sessionmaker() as session:
            shown = await sharing.shared_conversation(session=session, token=link.token)
            assert [(m.role, m.content) for m in shown.messages] == [
                ("user", "alice-marker question 0.0: why?"),
                ("assistant", "A scripted answer, ünïcödé ✓."),
            ]
            stored = await session.scalar(
                select(ConversationShare).where(ConversationShare.id == link.id)
            )
            assert stored is not None and stored.token_hash == hash_secret(link.token)
            with pytest.raises(NotFound):
                await sharing.revoke_share(session=session, user_id=bob.id, share_id=link.id)
            await sharing.revoke_share(session=session, user_id=alice.id, share_id=link.id)
            with pytest.raises(NotFound):
                await sharing.shared_conversation(session=session, token=link.token)
            # the account goes, its links with it
            await session.delete(await session.get(User, alice.id))
            await session.commit()
            with pytest.raises(NotFound):
                await sharing.shared_conversation(session=session, token=other.token)
    finally:
        await chats.aclose()
