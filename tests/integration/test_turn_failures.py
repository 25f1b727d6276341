"""When the model fails mid-answer or the user goes away, nothing half-written is
stored as if it were whole, and the conversation stays usable."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ray import serve

from actors.client import kill_shards
from chatapp.config import Settings
from deployments.app import build_app
from tests.conftest import expect_error, run_app
from tests.integration.sse import iter_events


def deploy(base_url: str, name: str, pg_url: str, llm: dict[str, Any]) -> dict[str, Any]:
    overrides = {
        "database": {"url": pg_url},
        "llm": {"engine": "simulated", **llm},
        "shards": {"count": 1, "name_prefix": f"{name}-{uuid.uuid4().hex[:6]}"},
    }
    run_app(build_app(overrides), name=name, route_prefix=f"/{name}", base_url=base_url)
    return overrides


@pytest.fixture(scope="module")
def sim_apps(chat_app: str, pg_url: str) -> Iterator[str]:
    """Two more ChatApp applications on the same Serve instance, with simulated engines."""
    apps = {
        "failing": deploy(chat_app, "failing", pg_url, {"simulated_fail_after_tokens": 3}),
        "slow": deploy(
            chat_app,
            "slow",
            pg_url,
            {"simulated_tokens_per_s": 20, "simulated_reply_tokens": 400},
        ),
    }
    yield chat_app
    for name, overrides in apps.items():
        serve.delete(name)
        kill_shards(Settings.from_overrides(overrides))


def database_now(pg_url: str) -> Any:
    """The database server's clock (``now()``), to compare with ``pg_stat_activity`` times."""
    return asyncio.run(_fetchval(pg_url, "SELECT clock_timestamp()"))


def idle_in_transaction_since(pg_url: str, since: Any) -> int:
    """Connections to the test database idle inside a transaction that was already open at
    ``since`` (database clock). A transaction between two statements of a short unit of work
    is idle for a moment too; only one held open across ``since`` is a leaked connection."""
    return int(
        asyncio.run(
            _fetchval(
                pg_url,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'idle in transaction' AND xact_start < $1",
                since,
            )
        )
    )


async def _fetchval(pg_url: str, query: str, *args: Any) -> Any:
    import asyncpg

    conn = await asyncpg.connect("postgresql://" + pg_url.split("://", 1)[1])
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


def messages(client: httpx.Client, prefix: str, conv: str) -> list[dict[str, Any]]:
    return client.get(f"{prefix}/api/conversations/{conv}").json()["messages"]  # type: ignore[no-any-return]


def test_failure_after_first_token_keeps_partial_answer_marked_incomplete(
    sim_apps: str, auth_headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=sim_apps, timeout=60, headers=auth_headers) as client:
        conv = client.post("/failing/api/conversations", json={}).json()["id"]
        with client.stream(
            "POST", f"/failing/api/conversations/{conv}/messages", json={"content": "hi"}
        ) as response:
            assert response.status_code == 200
            events = list(iter_events(response))
        tokens = "".join(e.json()["text"] for e in events if e.event == "token")
        assert tokens == "w0 w1 w2 "
        assert events[-1].event == "error"
        error = events[-1].json()
        assert error["error"]["code"] == "provider_error" and error["status"] == "incomplete"

        stored = messages(client, "/failing", conv)
        assert [m["role"] for m in stored] == ["user", "assistant"]
        assert stored[1]["id"] == error["message_id"]
        assert stored[1]["status"] == "incomplete" and stored[1]["content"] == tokens
        assert stored[1]["finish_reason"] == "error"


def test_stopping_a_generation_stores_what_was_received(
    sim_apps: str, auth_headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=sim_apps, timeout=60, headers=auth_headers) as client:
        conv = client.post("/slow/api/conversations", json={}).json()["id"]
        received = []
        with client.stream(
            "POST", f"/slow/api/conversations/{conv}/messages", json={"content": "tell me more"}
        ) as response:
            for event in iter_events(response):
                if event.event == "token":
                    received.append(event.json()["text"])
                if len(received) >= 3:
                    break  # the user pressed "stop": the connection closes
        deadline = time.monotonic() + 20
        while True:
            stored = messages(client, "/slow", conv)
            if len(stored) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert [m["role"] for m in stored] == ["user", "assistant"]
        reply = stored[1]
        assert reply["status"] == "incomplete" and reply["finish_reason"] == "cancelled"
        assert reply["content"].startswith("".join(received))
        assert len(reply["content"].split()) < 100  # generation stopped, far short of 400

        # the conversation is free for the next turn
        response = client.post(
            f"/slow/api/conversations/{conv}/messages",
            json={"content": "again", "stream": False, "max_tokens": 3},
        )
        assert response.status_code == 200, response.text
        assert response.json()["message"]["status"] == "complete"


def test_streaming_replies_hold_no_database_connection(
    sim_apps: str, auth_headers: dict[str, str], pg_url: str
) -> None:
    """While replies stream, no pooled connection is left idle in a transaction: the login
    check's session used to stay open until each stream ended, so concurrent streams beyond
    the pool's size (10 + 10) waited for a connection and then failed with 500."""
    with httpx.Client(base_url=sim_apps, timeout=60, headers=auth_headers) as client:
        convs = [client.post("/slow/api/conversations", json={}).json()["id"] for _ in range(6)]
        with contextlib.ExitStack() as open_streams:
            for conv in convs:
                response = open_streams.enter_context(
                    client.stream(
                        "POST",
                        f"/slow/api/conversations/{conv}/messages",
                        json={"content": "tell me a long story"},
                    )
                )
                assert response.status_code == 200
                first = next(e for e in iter_events(response) if e.event == "token")
                assert first.json()["text"]
                if conv == convs[0]:
                    first_streaming = database_now(pg_url)
            # six replies are streaming now; none holds a transaction from before the first token
            assert idle_in_transaction_since(pg_url, first_streaming) == 0


def test_a_second_message_while_a_reply_streams_is_409_with_retry_after(
    sim_apps: str, auth_headers: dict[str, str]
) -> None:
    """The conversation is held by the running turn's lease: the refusal says when to try
    again (a live turn renews its lease; a dead replica's turn frees it by then)."""
    with httpx.Client(base_url=sim_apps, timeout=60, headers=auth_headers) as client:
        conv = client.post("/slow/api/conversations", json={}).json()["id"]
        url = f"/slow/api/conversations/{conv}/messages"
        with client.stream("POST", url, json={"content": "tell me more"}) as response:
            events = iter_events(response)  # kept: dropping it would close the stream
            while next(events).event != "token":
                pass
            second = client.post(url, json={"content": "and this?"})
            error = expect_error(second, 409)
            assert "still being generated" in error["message"]
            assert 1 <= int(second.headers["retry-after"]) <= 10  # SHARDS_TURN_LEASE_S
