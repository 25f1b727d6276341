"""A user's export (issue 13): `GET /api/me/export` on the running app, and the core's
paged export on both databases. It holds exactly the user's data (profile, API keys,
every conversation with every message, usage) and nothing of anyone else's, and no
password hash, token or API key (or its hash)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from chatapp.auth.tokens import hash_secret
from chatapp.chat import repository
from chatapp.chat.schemas import MessagePublic
from chatapp.db.models import OidcIdentity, UsageEvent, User
from chatapp.errors import NotFound
from chatapp.export import EXPORT_LIMIT, export_user
from tests.conftest import expect_error
from tests.integration.chat_data import PASSWORD, Chats

SECRET_FIELDS = ("password_hash", "key_hash", "token_hash", "idempotency_key")


async def _export(sessionmaker: Any, user_id: uuid.UUID, **paging: int) -> list[bytes]:
    return [c async for c in export_user(sessionmaker=sessionmaker, user_id=user_id, **paging)]


async def test_the_paged_export_holds_exactly_the_users_data(sessionmaker: Any) -> None:
    chats = Chats(sessionmaker)
    try:
        alice, bob = await chats.user("alice"), await chats.user("bob")
        alice_key, bob_key = await chats.api_key(alice), await chats.api_key(bob)
        # pages of 2 rows: conversations of 0, 1, 2 and 3 turns (0 to 6 messages: empty,
        # one page, two full pages, three), 4 conversations, 6 usage events
        mine = await chats.chats(alice, [0, 1, 2, 3], "alice-marker")
        await chats.chats(bob, [2], "bob-marker")
        async with sessionmaker() as session:
            session.add(OidcIdentity(user_id=alice.id, provider="testidp", subject="alice-sub"))
            await session.commit()
        await chats.usage.ledger.flush()

        chunks = await _export(sessionmaker, alice.id, page_size=2, chunk_bytes=1024)
    finally:
        await chats.aclose()
    text = b"".join(chunks).decode()
    export = json.loads(text)
    # sent as it is read, in chunks of about chunk_bytes (one page of rows at most over)
    assert len(chunks) > 3 and max(len(c) for c in chunks) < 1024 + 2 * 1024

    assert export["format"] == "chatapp-export" and export["version"] == 1
    user = export["user"]
    assert user["id"] == str(alice.id) and user["email"] == alice.email
    assert user["display_name"] == "Person alice" and user["has_password"] is True
    assert [(x["provider"], x["subject"]) for x in user["linked_logins"]] == [
        ("testidp", "alice-sub")
    ]
    assert [k["prefix"] for k in export["api_keys"]] == [alice_key[:12]]

    # every conversation, newest first, each with every message, oldest first
    assert [c["id"] for c in export["conversations"]] == [str(c) for c in reversed(mine)]
    async with sessionmaker() as session:
        for conversation in export["conversations"]:
            rows, _ = await repository.list_messages(
                session=session, conversation_id=uuid.UUID(conversation["id"]), limit=100
            )
            assert conversation["messages"] == [
                json.loads(MessagePublic.model_validate(r).model_dump_json()) for r in rows
            ]
        assert [len(c["messages"]) for c in export["conversations"]] == [6, 4, 2, 0]
        events = list(
            await session.scalars(select(UsageEvent).where(UsageEvent.user_id == alice.id))
        )
        hashes = [u.password_hash for u in await session.scalars(select(User)) if u.password_hash]
    assert len(export["usage_events"]) == len(events) == 6
    assert {e["conversation_id"] for e in export["usage_events"]} == {str(c) for c in mine[1:]}

    # nothing of Bob's; no secret of anyone's
    for foreign in (str(bob.id), bob.email, "bob-marker", bob_key, hash_secret(bob_key)):
        assert foreign not in text
    for secret in (alice_key, hash_secret(alice_key), PASSWORD, "$argon2", *hashes):
        assert secret and secret not in text
    for field in SECRET_FIELDS:
        assert f'"{field}"' not in text


async def test_the_export_of_an_account_that_is_gone_is_not_found(sessionmaker: Any) -> None:
    with pytest.raises(NotFound):
        await _export(sessionmaker, uuid.uuid4())


# -- over HTTP, on the running app -------------------------------------------------------


@pytest.fixture
def http(chat_app: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chat_app, timeout=120) as client:
        yield client


def _account(http: httpx.Client, tag: str) -> dict[str, Any]:
    """A new account with a conversation of one turn and an API key."""
    email = f"{tag}-{uuid.uuid4().hex[:8]}@example.com"
    created = http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    got = http.post("/api/auth/token", data={"username": email, "password": PASSWORD})
    assert got.status_code == 200, got.text
    tokens = got.json()
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    conversation = http.post("/api/conversations", json={"title": f"{tag} chat"}, headers=auth)
    cid = conversation.json()["id"]
    turn = http.post(
        f"/api/conversations/{cid}/messages",
        json={"content": f"{tag}-marker: say hi", "stream": False, "rag": "off"},
        headers=auth,
    )
    assert turn.status_code == 200, turn.text
    key = http.post("/api/keys", json={"name": "cli"}, headers=auth).json()["key"]
    return {"auth": auth, "tokens": tokens, "email": email, "conversation": cid, "key": key}


def test_a_user_downloads_their_data_and_only_theirs(http: httpx.Client) -> None:
    alice, bob = _account(http, "alice"), _account(http, "bob")

    # another ingress replica's usage rows are written within USAGE_FLUSH_INTERVAL_S
    deadline = time.monotonic() + 30
    while http.get("/api/usage", headers=alice["auth"]).json()["replies"] < 1:
        assert time.monotonic() < deadline, "the turn's usage was never written"
        time.sleep(0.2)
    response = http.get("/api/me/export", headers=alice["auth"])
    assert response.status_code == 200, response.text
    export = response.json()
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    assert response.headers["cache-control"] == "no-store"
    assert export["user"] == {
        **http.get("/api/me", headers=alice["auth"]).json(),
        "email_verified": False,
        "has_password": True,
        "linked_logins": [],
    }
    assert export["api_keys"] == http.get("/api/keys", headers=alice["auth"]).json()
    detail = http.get(f"/api/conversations/{alice['conversation']}", headers=alice["auth"]).json()
    (conversation,) = export["conversations"]
    # the page's paging and a long chat's running summary (derived from the messages, which
    # are all there) are not part of the data
    assert conversation == {k: v for k, v in detail.items() if k not in ("has_more", "summary")}
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"]
    (event,) = export["usage_events"]
    assert event["conversation_id"] == alice["conversation"] and event["kind"] == "chat"
    assert event["completion_tokens"] == conversation["messages"][1]["completion_tokens"]

    text = response.text
    for foreign in (bob["email"], bob["conversation"], "bob-marker", bob["key"]):
        assert foreign not in text
    for secret in (
        alice["key"],
        hash_secret(alice["key"]),
        alice["tokens"]["access_token"],
        alice["tokens"]["refresh_token"],
        PASSWORD,
        "$argon2",
    ):
        assert secret not in text
    for field in SECRET_FIELDS:
        assert f'"{field}"' not in text

    # Bob's export is Bob's
    assert http.get("/api/me/export", headers=bob["auth"]).json()["user"]["email"] == bob["email"]


def test_the_export_needs_a_login_and_is_rate_limited(http: httpx.Client) -> None:
    expect_error(http.get("/api/me/export"), 401)
    email = f"carol-{uuid.uuid4().hex[:8]}@example.com"
    created = http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    token = http.post("/api/auth/token", data={"username": email, "password": PASSWORD})
    assert token.status_code == 200, token.text
    auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
    allowed = int(EXPORT_LIMIT.split("/")[0])
    for _ in range(allowed):
        assert http.get("/api/me/export", headers=auth).status_code == 200
    refused = http.get("/api/me/export", headers=auth)
    error = expect_error(refused, 429)
    assert "exports" in error["message"] and int(refused.headers["retry-after"]) > 0
