"""Conversation shards: a killed shard is restarted by Ray and re-activates from SQL."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import ray

from actors.client import ShardClient
from chatapp.config import Settings
from tests.integration.sse import iter_events


def turn(client: httpx.Client, conv: str, content: str) -> dict[str, Any]:
    with client.stream(
        "POST", f"/api/conversations/{conv}/messages", json={"content": content, "max_tokens": 8}
    ) as response:
        assert response.status_code == 200, response.read()
        events = list(iter_events(response))
    assert events[-1].event == "done", events[-1]
    return events[-1].json()  # type: ignore[no-any-return]


def wait_for_restart(shard: Any, timeout: float = 60) -> None:
    """Until the restarted incarnation answers: it holds no conversation yet. (`ray.kill`
    returns before the old one is gone, so a call may still reach it, or fail.)"""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ray.get(shard.hot_ids.remote(), timeout=5) == []:
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the killed shard did not come back")
        time.sleep(0.5)


def test_killed_shard_restarts_and_keeps_the_whole_history(
    chat_app: str, app_overrides: dict[str, Any], auth_headers: dict[str, str]
) -> None:
    settings = Settings.from_overrides(app_overrides)
    with httpx.Client(base_url=chat_app, timeout=120, headers=auth_headers) as client:
        conv = client.post("/api/conversations", json={}).json()["id"]
        first = turn(client, conv, "My name is Ada.")
        turn(client, conv, "I like chess.")
        shard = ShardClient(settings).shard_for(uuid.UUID(conv))
        assert uuid.UUID(conv) in ray.get(shard.hot_ids.remote())

        ray.kill(shard, no_restart=False)
        wait_for_restart(shard)  # it comes back empty

        third = turn(client, conv, "What is my name?")
        # The prompt of the third turn holds the four earlier messages again.
        assert third["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"] + 20
        assert uuid.UUID(conv) in ray.get(shard.hot_ids.remote())
        messages = client.get(f"/api/conversations/{conv}").json()["messages"]
        assert [m["seq"] for m in messages] == list(range(6))
        assert [m["content"] for m in messages if m["role"] == "user"] == [
            "My name is Ada.",
            "I like chess.",
            "What is my name?",
        ]


def test_conversations_spread_over_shards(app_overrides: dict[str, Any]) -> None:
    client = ShardClient(Settings.from_overrides(app_overrides))
    owners = {str(client._ring.get_node(str(uuid.uuid4()))) for _ in range(200)}
    assert len(owners) == 2
    conv = uuid.uuid4()
    assert client._ring.get_node(str(conv)) == client._ring.get_node(str(conv))
