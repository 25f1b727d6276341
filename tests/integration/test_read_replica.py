"""DATABASE_READ_URL against a real PostgreSQL streaming replica: a primary and a hot
standby of the test's own (`tests/integration/replica.py`). Lists and history pages are
read from the standby (with its replay paused they do not show new rows), while a turn in
that conversation works and reads its own writes on the primary; when the standby goes
away the reads go to the primary, logged once per outage.

The ingress's FastAPI app is built in-process as a replica builds it (`build_state`),
over the session's Ray (its model router), with shards of its own on the private primary.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from ray.serve.handle import DeploymentHandle
from sqlalchemy import text

from actors.client import kill_shards
from chatapp.config import DatabaseSettings, Settings
from chatapp.db.engine import ReadSessions, make_engine, make_sessionmaker, migrate
from tests.integration.replica import PrivatePrimary, PrivateReplica, sql

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[PrivatePrimary, PrivateReplica]]:
    with PrivatePrimary() as primary:
        migrate(DatabaseSettings(url=primary.url))
        with PrivateReplica(primary) as replica:
            yield primary, replica


@pytest.fixture
async def api(
    chat_app: str, app_overrides: dict[str, Any], cluster: tuple[PrivatePrimary, PrivateReplica]
) -> AsyncIterator[httpx.AsyncClient]:
    """The ingress app on the private primary, reading from its standby; a logged-in user."""
    from deployments.ingress.app import build_state, create_api

    primary, replica = cluster
    settings = Settings.from_overrides(
        {
            **app_overrides,
            "database": {"url": primary.url, "read_url": replica.url},
            "shards": {"count": 1, "name_prefix": f"replica-shard-{uuid.uuid4().hex[:6]}"},
        }
    )
    state = build_state(settings, DeploymentHandle("ChatRouter", "chatapp"))
    transport = httpx.ASGITransport(app=create_api(state))
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://chatapp", timeout=120
        ) as http:
            email = f"reader-{uuid.uuid4().hex[:8]}@example.com"
            creds = {"email": email, "password": PASSWORD}
            assert (await http.post("/api/auth/register", json=creds)).status_code == 201
            login = {"username": email, "password": PASSWORD}
            token = await http.post("/api/auth/token", data=login)
            assert token.status_code == 200, token.text
            http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
            yield http
    finally:
        if state.chat.usage is not None:
            await state.chat.usage.aclose()
        kill_shards(settings)


async def _titles(http: httpx.AsyncClient) -> list[str]:
    response = await http.get("/api/conversations")
    assert response.status_code == 200, response.text
    return [c["title"] for c in response.json()["items"]]


async def _turn(http: httpx.AsyncClient, conv: str, content: str) -> dict[str, Any]:
    response = await http.post(
        f"/api/conversations/{conv}/messages",
        json={"content": content, "stream": False, "max_tokens": 4},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_lists_and_history_lag_on_the_replica_while_the_turn_reads_its_writes(
    api: httpx.AsyncClient, cluster: tuple[PrivatePrimary, PrivateReplica]
) -> None:
    _, replica = cluster
    created = await api.post("/api/conversations", json={"title": "before the pause"})
    assert created.status_code == 201, created.text
    conv = created.json()["id"]
    await replica.catch_up()
    assert await _titles(api) == ["before the pause"]

    await replica.pause_replay()
    try:
        # written on the primary, not yet replayed: the list (from the replica) lacks it
        late = await api.post("/api/conversations", json={"title": "during the pause"})
        assert late.status_code == 201, late.text
        assert await _titles(api) == ["before the pause"]
        # a turn in the first conversation works and sees its own previous turn: the
        # second user message follows the first reply, which only the primary has
        first = await _turn(api, conv, "Say hello.")
        second = await _turn(api, conv, "Again.")
        assert second["user_message"]["seq"] == first["message"]["seq"] + 1
        # the history page comes from the replica, which has none of the turns yet
        page = await api.get(f"/api/conversations/{conv}")
        assert page.status_code == 200, page.text
        assert page.json()["messages"] == []
        assert (await api.get("/api/usage")).status_code == 200
        # a conversation just created opens at once (the replica has not got it yet)
        opened = await api.get(f"/api/conversations/{late.json()['id']}")
        assert opened.status_code == 200, opened.text
        assert opened.json()["title"] == "during the pause"
        assert (await api.get(f"/api/conversations/{uuid.uuid4()}")).status_code == 404
    finally:
        await replica.resume_replay()

    await replica.catch_up()
    # both now (the turns made the first one the most recently updated)
    assert await _titles(api) == ["before the pause", "during the pause"]
    page = (await api.get(f"/api/conversations/{conv}")).json()
    assert [m["seq"] for m in page["messages"]] == [
        first["user_message"]["seq"],
        first["message"]["seq"],
        second["user_message"]["seq"],
        second["message"]["seq"],
    ]
    usage = (await api.get("/api/usage")).json()
    assert usage["total_tokens"] > 0, usage


async def test_reads_go_to_the_primary_while_the_replica_is_down(
    api: httpx.AsyncClient, cluster: tuple[PrivatePrimary, PrivateReplica]
) -> None:
    _, replica = cluster
    assert (await api.post("/api/conversations", json={"title": "kept"})).status_code == 201
    replica.stop()
    try:
        # no catch-up needed: the primary answers, with everything written
        assert await _titles(api) == ["kept"]
        assert (await api.get("/api/usage")).status_code == 200
    finally:
        replica.start()


async def test_read_sessions_fall_back_and_log_once_per_outage(
    cluster: tuple[PrivatePrimary, PrivateReplica], caplog: pytest.LogCaptureFixture
) -> None:
    primary, replica = cluster
    settings = DatabaseSettings(url=primary.url, read_url=replica.url, pool_pre_ping=True)
    engines = [make_engine(settings), make_engine(settings, url=settings.resolved_read_url())]
    reads = ReadSessions(*(make_sessionmaker(e) for e in engines), retry_after_s=0)

    async def on_replica() -> bool:
        async with reads.session() as session:
            return bool((await session.execute(text("SELECT pg_is_in_recovery()"))).scalar())

    try:
        assert await on_replica()  # a pooled connection to the replica from now on
        caplog.set_level(logging.WARNING, logger="chatapp.db.engine")
        replica.stop()
        try:
            assert [await on_replica() for _ in range(3)] == [False] * 3
        finally:
            replica.start()
        assert await on_replica()
        messages = [r.getMessage() for r in caplog.records if r.name == "chatapp.db.engine"]
        assert len(messages) == 2, messages  # the outage's start and its end
        assert "unreachable" in messages[0] and "again" in messages[1]
        assert await sql(replica.url, "SELECT pg_is_in_recovery()")
    finally:
        for engine in engines:
            await engine.dispose()
