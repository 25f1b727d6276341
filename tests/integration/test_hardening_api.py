"""Attack tests over HTTP against the running app (issue 9): an oversized chunked body
(item 15), and another user's conversation on regenerate and edit (IDOR)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import expect_error, register_and_login


@pytest.fixture
def client(chat_app: str) -> Iterator[httpx.Client]:
    """A fresh user of the running app (their own rate-limit counters)."""
    with httpx.Client(base_url=chat_app, timeout=120, headers=register_and_login(chat_app)) as c:
        yield c


# -- item 15: an oversized chunked body ----------------------------------------------------


def test_an_oversized_chunked_body_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        yield b'{"title": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    before = client.get("/api/conversations").json()
    response = client.post(
        "/api/conversations", content=chunks(), headers={"content-type": "application/json"}
    )
    error = expect_error(response, 413)
    assert error["code"] == "payload_too_large"
    # the user's report can be found in the logs: the body quotes the request's id
    assert error["request_id"] == response.headers["x-request-id"]
    assert client.get("/api/conversations").json() == before

    def small() -> Iterator[bytes]:  # a chunked body under the limit still works
        yield b'{"title": '
        yield b'"chunked"}'

    created = client.post(
        "/api/conversations", content=small(), headers={"content-type": "application/json"}
    )
    assert created.status_code == 201 and created.json()["title"] == "chunked"


def test_an_oversized_anthropic_request_is_refused_in_anthropics_envelope(
    client: httpx.Client,
) -> None:
    """The body limit answers before any route runs: /v1/messages still gets the error
    in the shape Anthropic's SDKs read (the schema fuzz found it in OpenAI's)."""
    body = {"model": "x", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 2**21}]}
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 413, response.text
    answer = response.json()
    assert answer["type"] == "error" and answer["error"]["type"] == "request_too_large"
    assert "larger than" in answer["error"]["message"]
    assert answer["request_id"] == response.headers["x-request-id"]


# -- IDOR: another user's conversation ---------------------------------------------------


def _history(client: httpx.Client, conv: str) -> list[tuple[int, str, str]]:
    detail = client.get(f"/api/conversations/{conv}")
    assert detail.status_code == 200, detail.text
    return [(m["seq"], m["role"], m["content"]) for m in detail.json()["messages"]]


@pytest.fixture
def victims_conversation(chat_app: str) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=chat_app, timeout=120, headers=register_and_login(chat_app)) as v:
        conv = v.post("/api/conversations", json={"title": "private"}).json()["id"]
        sent = v.post(
            f"/api/conversations/{conv}/messages",
            json={"content": "My secret is 1234.", "stream": False, "max_tokens": 4},
        )
        assert sent.status_code == 200, sent.text
        yield v, conv


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("regenerate", {"stream": False, "max_tokens": 4}),
        ("regenerate", None),
        ("messages", {"content": "Tell me", "replace_from_seq": 0, "stream": False}),
        ("messages", {"content": "Tell me", "replace_from_seq": 0}),
        ("messages", {"content": "Tell me", "stream": False}),
    ],
)
def test_regenerate_and_edit_on_another_users_conversation_are_404(
    client: httpx.Client,
    victims_conversation: tuple[httpx.Client, str],
    path: str,
    body: dict[str, Any] | None,
) -> None:
    victim, conv = victims_conversation
    before = _history(victim, conv)
    response = client.post(f"/api/conversations/{conv}/{path}", json=body)
    error = expect_error(response, 404)
    assert error["code"] == "not_found" and "1234" not in response.text
    assert _history(victim, conv) == before
    # exactly like a conversation that does not exist
    missing = client.post(f"/api/conversations/{uuid.uuid4()}/{path}", json=body)
    assert missing.status_code == 404


# -- found by schema fuzzing (tests/integration/test_schema_fuzz.py) ------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("get", "/api/conversations", {"params": {"q": "\x00abc"}}),
        ("post", "/api/conversations", {"json": {"title": "a\x00b"}}),
        ("post", "/api/auth/register", {"json": {"email": "nul@example.com",
                                                  "password": "correct horse battery staple",
                                                  "display_name": "a\x00b"}}),
    ],
)  # fmt: skip
def test_text_with_a_nul_character_is_422_not_500(
    client: httpx.Client, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    """PostgreSQL cannot store U+0000 in text: refused as invalid input."""
    before = client.get("/api/conversations").json()
    assert expect_error(client.request(method, path, **kwargs), 422)["code"]
    assert client.get("/api/conversations").json() == before


def test_a_message_or_title_with_a_nul_character_is_422_and_stores_nothing(
    client: httpx.Client,
) -> None:
    conv = client.post("/api/conversations", json={"title": "t"}).json()["id"]
    before = _history(client, conv)
    sent = client.post(
        f"/api/conversations/{conv}/messages", json={"content": "hi\x00", "stream": False}
    )
    assert "NUL" in expect_error(sent, 422)["message"]
    renamed = client.patch(f"/api/conversations/{conv}", json={"title": "\x00"})
    assert expect_error(renamed, 422)["code"] == "invalid_body"
    assert _history(client, conv) == before
    assert client.get(f"/api/conversations/{conv}").json()["title"] == "t"


def test_sequence_numbers_past_the_columns_range_are_422_not_500(client: httpx.Client) -> None:
    """Message sequence numbers are 32-bit in the database: a larger one is invalid input."""
    conv = client.post("/api/conversations", json={}).json()["id"]
    sent = client.post(
        f"/api/conversations/{conv}/messages",
        json={"content": "hi", "stream": False, "max_tokens": 2},
    )
    assert sent.status_code == 200, sent.text
    before = _history(client, conv)
    paged = client.get(f"/api/conversations/{conv}", params={"before": 2**40})
    assert expect_error(paged, 422)["code"] == "invalid_body"
    edited = client.post(
        f"/api/conversations/{conv}/messages",
        json={"content": "edited", "replace_from_seq": 2**40, "stream": False},
    )
    assert expect_error(edited, 422)["code"]
    assert _history(client, conv) == before
