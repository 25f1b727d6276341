"""Long chats through the running app (Ray Serve, shard actors, PostgreSQL): a chat that
outgrows a small context window gets a running summary, written in the background and
shown by `GET /api/conversations/{id}`."""

from __future__ import annotations

import copy
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
from tests.conftest import REDIS_URL, register_and_login, run_app


@pytest.fixture(scope="module")
def longchat(chat_app: str, app_overrides: dict[str, Any]) -> Iterator[str]:
    """The app with a 256-token window, answered by the simulated engine (8 words)."""
    overrides = copy.deepcopy(app_overrides)
    overrides["shards"] = {"count": 1, "name_prefix": f"longchat-{uuid.uuid4().hex[:6]}"}
    overrides["redis"] = {"url": REDIS_URL, "key_prefix": f"chatapp-test-{uuid.uuid4().hex[:8]}:"}
    overrides["llm"] = {
        "engine": "simulated",
        "simulated_reply_tokens": 8,
        "context_window": 256,
        "default_max_tokens": 8,
    }
    overrides["chat"] = {"system_prompt": "You are terse.", "summary_max_tokens": 16}
    run_app(build_app(overrides), name="longchat", route_prefix="/longchat", base_url=chat_app)
    yield f"{chat_app}/longchat"
    serve.delete("longchat")
    kill_shards(Settings.from_overrides(overrides))


def test_a_long_chat_shows_its_running_summary(longchat: str) -> None:
    with httpx.Client(base_url=longchat, timeout=60, headers=register_and_login(longchat)) as c:
        conv = c.post("/api/conversations", json={}).json()["id"]
        assert c.get(f"/api/conversations/{conv}").json()["summary"] is None
        for i in range(4):
            content = f"Message {i} about my garden: " + "roses and tulips need water. " * 6
            response = c.post(
                f"/api/conversations/{conv}/messages", json={"content": content, "stream": False}
            )
            assert response.status_code == 200, response.text
        # Written in the background after a turn: it shows up soon after, never before
        # the chat needs it.
        deadline = time.monotonic() + 30
        while (detail := c.get(f"/api/conversations/{conv}").json())["summary"] is None:
            assert time.monotonic() < deadline, "no summary was written"
            time.sleep(0.2)
        summary = detail["summary"]
        assert summary["version"] >= 1 and summary["content"].startswith("w0 w1")
        assert summary["model"] == detail["messages"][-1]["model"]  # the chat's own model
        assert 1 <= summary["covers_seq"] < detail["messages"][-1]["seq"] - 1
        assert len(detail["messages"]) == 8  # summarised messages are still all there
        # The next turn is answered (its prompt holds the summary, from the shard).
        response = c.post(
            f"/api/conversations/{conv}/messages", json={"content": "And now?", "stream": False}
        )
        assert response.status_code == 200, response.text
