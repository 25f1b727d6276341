"""Search, edit-and-resend and regenerate over HTTP, with the real SmolLM2 model."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.integration.sse import iter_events


@pytest.fixture
def client(chat_app: str, auth_headers: dict[str, str]) -> Any:
    with httpx.Client(base_url=chat_app, timeout=120, headers=auth_headers) as c:
        yield c


def new_conversation(client: httpx.Client, title: str = "") -> str:
    response = client.post("/api/conversations", json={"title": title})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def send(client: httpx.Client, conv: str, path: str = "messages", **body: Any) -> Any:
    response = client.post(
        f"/api/conversations/{conv}/{path}", json={"stream": False, "max_tokens": 6, **body}
    )
    assert response.status_code == 200, response.text
    return response.json()


def history(client: httpx.Client, conv: str) -> list[tuple[int, str, str]]:
    messages = client.get(f"/api/conversations/{conv}").json()["messages"]
    return [(m["seq"], m["role"], m["content"]) for m in messages]


def test_search_by_title_and_content(client: httpx.Client) -> None:
    word = f"quokka{uuid.uuid4().hex[:6]}"
    by_title = new_conversation(client, title=f"About {word.upper()}")
    by_content = new_conversation(client)
    send(client, by_content, content=f"Is a {word} friendly?")
    new_conversation(client, title="unrelated")

    found = client.get("/api/conversations", params={"q": word}).json()
    assert [c["id"] for c in found["items"]] == [by_content, by_title]  # newest first
    page = client.get("/api/conversations", params={"q": word, "limit": 1}).json()
    assert [c["id"] for c in page["items"]] == [by_content] and page["next_cursor"]
    rest = client.get(
        "/api/conversations", params={"q": word, "limit": 1, "cursor": page["next_cursor"]}
    ).json()
    assert [c["id"] for c in rest["items"]] == [by_title] and rest["next_cursor"] is None
    assert client.get("/api/conversations", params={"q": "no-such-text-" + word}).json() == {
        "items": [],
        "next_cursor": None,
    }


def test_edit_and_resend_replaces_the_rest_of_the_history(client: httpx.Client) -> None:
    conv = new_conversation(client)
    send(client, conv, content="Name a fruit.")
    send(client, conv, content="Name a colour.")
    assert len(history(client, conv)) == 4

    # streamed like any turn
    with client.stream(
        "POST",
        f"/api/conversations/{conv}/messages",
        json={"content": "Name a planet.", "replace_from_seq": 2, "max_tokens": 6},
    ) as response:
        assert response.status_code == 200
        events = list(iter_events(response))
    assert events[0].event == "start" and events[0].json()["seq"] == 2
    assert events[-1].event == "done" and events[-1].json()["seq"] == 3
    rows = history(client, conv)
    assert [r[:2] for r in rows] == [(0, "user"), (1, "assistant"), (2, "user"), (3, "assistant")]
    assert rows[0][2] == "Name a fruit." and rows[2][2] == "Name a planet."

    send(client, conv, content="Hello again", replace_from_seq=0)
    assert [r[2] for r in history(client, conv)][:1] == ["Hello again"]
    assert len(history(client, conv)) == 2


def test_regenerate_replaces_the_last_answer(client: httpx.Client) -> None:
    conv = new_conversation(client)
    first = send(client, conv, content="Say a number.")
    again = send(client, conv, path="regenerate", temperature=1.0)
    assert again["user_message"]["content"] == "Say a number."
    assert again["message"]["seq"] == 1 and again["message"]["id"] != first["message"]["id"]
    rows = history(client, conv)
    assert [r[:2] for r in rows] == [(0, "user"), (1, "assistant")]
    assert rows[1][2] == again["message"]["content"]

    # streamed by default, with no body at all
    with client.stream("POST", f"/api/conversations/{conv}/regenerate") as response:
        assert response.status_code == 200
        kinds = [e.event for e in iter_events(response)]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert len(history(client, conv)) == 2


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"replace_from_seq": 1}, 422),  # an assistant message
        ({"replace_from_seq": 9}, 422),  # no such message
        ({"replace_from_seq": -1}, 422),
    ],
)
def test_bad_edits_change_nothing(client: httpx.Client, body: dict[str, Any], status: int) -> None:
    conv = new_conversation(client)
    send(client, conv, content="Hi")
    before = history(client, conv)
    response = client.post(
        f"/api/conversations/{conv}/messages", json={"content": "edited", "stream": False, **body}
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]
    assert history(client, conv) == before


def test_regenerate_errors(client: httpx.Client) -> None:
    empty = new_conversation(client)
    response = client.post(f"/api/conversations/{empty}/regenerate")
    assert response.status_code == 422
    assert "no message" in response.json()["error"]["message"]
    response = client.post(f"/api/conversations/{uuid.uuid4()}/regenerate")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_web_page_is_served_without_hiding_the_api(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<div id="app">' in page.text
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    assert client.get("/v1/models").status_code == 200
    missing = client.get("/api/no-such-route")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    posted = client.post("/api/no-such-route", json={})
    assert posted.status_code == 404 and posted.json()["error"]["code"] == "not_found"
