"""A user chatting over HTTP with ChatApp on Ray Serve and the real SmolLM2 model."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.integration.sse import Event, iter_events

pytestmark = pytest.mark.usefixtures("chat_app")


@pytest.fixture
def client(chat_app: str, auth_headers: dict[str, str]) -> httpx.Client:
    with httpx.Client(base_url=chat_app, timeout=120, headers=auth_headers) as c:
        yield c  # type: ignore[misc]


def new_conversation(client: httpx.Client) -> str:
    response = client.post("/api/conversations", json={})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def send(client: httpx.Client, conv: str, content: str, **extra: Any) -> list[Event]:
    with client.stream(
        "POST", f"/api/conversations/{conv}/messages", json={"content": content, **extra}
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(iter_events(response))


def snapshot(client: httpx.Client) -> Any:
    """Everything the local user has stored."""
    convs = client.get("/api/conversations", params={"limit": 100}).json()["items"]
    return [(c, client.get(f"/api/conversations/{c['id']}").json()["messages"]) for c in convs]


def test_streamed_turn_is_stored_and_history_is_used(client: httpx.Client) -> None:
    conv = new_conversation(client)
    events = send(client, conv, "What is the capital of France?")
    kinds = [e.event for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    tokens = [e.json()["text"] for e in events if e.event == "token"]
    assert len(tokens) >= 2, "the reply should arrive in several pieces"
    done = events[-1].json()
    assert done["finish_reason"] in {"stop", "length"}
    assert done["usage"]["prompt_tokens"] > 0 and 0 < done["usage"]["completion_tokens"] <= 24

    detail = client.get(f"/api/conversations/{conv}").json()
    assert detail["title"] == "What is the capital of France?"
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
    reply = detail["messages"][1]
    assert reply["id"] == done["message_id"] and reply["content"] == "".join(tokens)
    assert reply["status"] == "complete"

    # The second turn carries the first as context: its prompt is longer by that much.
    second = send(client, conv, "And of Italy?")[-1].json()
    fresh = send(client, new_conversation(client), "And of Italy?")[-1].json()
    assert second["usage"]["prompt_tokens"] > fresh["usage"]["prompt_tokens"] + 10
    assert len(client.get(f"/api/conversations/{conv}").json()["messages"]) == 4


def test_non_streamed_turn(client: httpx.Client) -> None:
    conv = new_conversation(client)
    response = client.post(
        f"/api/conversations/{conv}/messages",
        json={"content": "Say hi", "stream": False, "max_tokens": 8},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_message"]["content"] == "Say hi"
    assert body["message"]["role"] == "assistant" and body["message"]["content"]
    assert body["message"]["completion_tokens"] <= 8


def test_conversations_list_rename_delete(client: httpx.Client) -> None:
    a, b = new_conversation(client), new_conversation(client)
    page = client.get("/api/conversations", params={"limit": 1}).json()
    assert [c["id"] for c in page["items"]] == [b] and page["next_cursor"]
    nxt = client.get("/api/conversations", params={"limit": 1, "cursor": page["next_cursor"]})
    assert [c["id"] for c in nxt.json()["items"]] == [a]

    renamed = client.patch(f"/api/conversations/{a}", json={"title": "Trip plans"})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Trip plans"

    send(client, b, "hello")
    assert client.delete(f"/api/conversations/{b}").status_code == 204
    assert client.get(f"/api/conversations/{b}").status_code == 404
    assert client.delete(f"/api/conversations/{b}").status_code == 404


def test_messages_are_paged(client: httpx.Client) -> None:
    conv = new_conversation(client)
    for text in ("one", "two"):
        send(client, conv, text, max_tokens=4)
    page = client.get(f"/api/conversations/{conv}", params={"limit": 2}).json()
    assert [m["seq"] for m in page["messages"]] == [2, 3] and page["has_more"]
    older = client.get(f"/api/conversations/{conv}", params={"limit": 2, "before": 2}).json()
    assert next(m["content"] for m in older["messages"]) == "one" and not older["has_more"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("get", "/api/conversations/00000000-0000-4000-8000-000000000000", {}, 404, "not_found"),
        ("get", "/api/conversations/not-a-uuid", {}, 404, "not_found"),
        (
            "post",
            "/api/conversations/00000000-0000-4000-8000-000000000000/messages",
            {"json": {"content": "hi"}},
            404,
            "not_found",
        ),
        ("delete", "/api/conversations/00000000-0000-4000-8000-000000000000", {}, 404, "not_found"),
        (
            "post",
            "/api/conversations",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
            "invalid_json",
        ),
        ("post", "/api/conversations", {"json": {"title": "x" * 500}}, 422, "invalid_body"),
        ("post", "/api/conversations", {"json": {"bogus": 1}}, 422, "invalid_body"),
        ("get", "/api/conversations?limit=0", {}, 422, "invalid_body"),
        ("get", "/api/conversations?cursor=bogus", {}, 422, "invalid_request"),
    ],
)
def test_bad_requests_get_clear_errors_and_change_nothing(
    client: httpx.Client, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    before = snapshot(client)
    response = client.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert snapshot(client) == before


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"content": ""}, 422, "invalid_body"),
        ({"content": "   \n"}, 422, "invalid_body"),
        ({}, 422, "invalid_body"),
        ({"content": "hi", "max_tokens": 0}, 422, "invalid_body"),
        ({"content": "hi", "temperature": 9}, 422, "invalid_body"),
        ({"content": "x" * 70_000}, 413, "payload_too_large"),
        # longer than the model's whole window: refused before anything is stored
        ({"content": "word " * 3000}, 400, "context_window_exceeded"),
    ],
)
def test_bad_messages_are_refused_and_store_nothing(
    client: httpx.Client, body: dict[str, Any], status: int, code: str
) -> None:
    conv = new_conversation(client)
    send(client, conv, "first", max_tokens=4)
    before = snapshot(client)
    response = client.post(f"/api/conversations/{conv}/messages", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert snapshot(client) == before
    # and the conversation still works afterwards
    assert send(client, conv, "second", max_tokens=4)[-1].event == "done"


def test_greedy_turns_are_cached_and_the_header_opts_out(client: httpx.Client) -> None:
    question = f"Name three colours. ({uuid.uuid4().hex[:6]})"
    first = send(client, new_conversation(client), question, temperature=0, max_tokens=12)
    again = send(client, new_conversation(client), question, temperature=0, max_tokens=12)
    assert first[-1].json()["usage"]["cached"] is False
    assert again[-1].json()["usage"]["cached"] is True
    assert again[-1].json()["provider"] == first[-1].json()["provider"] == "self-hosted"

    def text(events: list[Event]) -> str:
        return "".join(e.json()["text"] for e in events if e.event == "token")

    assert text(again) == text(first)  # a cached answer streams like a fresh one
    with client.stream(
        "POST",
        f"/api/conversations/{new_conversation(client)}/messages",
        json={"content": question, "temperature": 0, "max_tokens": 12},
        headers={"X-ChatApp-Cache": "no"},
    ) as response:
        fresh = list(iter_events(response))
    assert fresh[-1].json()["usage"]["cached"] is False


def test_a_retry_with_the_same_idempotency_key_gets_the_stored_turn(
    client: httpx.Client,
) -> None:
    conv = new_conversation(client)
    url = f"/api/conversations/{conv}/messages"
    body = {"content": "Say hi", "stream": False, "max_tokens": 8}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = client.post(url, json=body, headers=key)
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    again = client.post(url, json=body, headers=key)
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["message"]["id"] == first.json()["message"]["id"]
    # Streamed, the same turn again: start, the stored reply, done.
    with client.stream("POST", url, json={**body, "stream": True}, headers=key) as response:
        assert response.headers["idempotent-replayed"] == "true"
        events = list(iter_events(response))
    assert [e.event for e in events] == ["start", "token", "done"]
    assert events[1].json()["text"] == first.json()["message"]["content"]
    assert events[-1].json()["message_id"] == first.json()["message"]["id"]
    messages = client.get(f"/api/conversations/{conv}").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert "idempotency_key" not in messages[0]
    # The key with another message, and keys that are not keys, are refused.
    other = client.post(url, json={**body, "content": "Say bye"}, headers=key)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["error"]["message"]
    for bad in ("", "has space", "k" * 256):
        response = client.post(url, json=body, headers={"Idempotency-Key": bad})
        assert response.status_code == 422, (bad, response.text)
    assert len(client.get(f"/api/conversations/{conv}").json()["messages"]) == 2
