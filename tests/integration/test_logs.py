"""Request logs and request ids (issue 13): one structured line per request with its id,
user, route template, status and duration, and never a password, a token or a message;
the id returned as `X-Request-ID` on every answer (streams and errors included) and
quoted in error bodies, so a user's report finds the request's lines.

The log lines are read two ways: from the ingress's FastAPI app built as a replica
builds it (in this process, over the running app's Ray deployments) with its lines
captured as JSON, and from the running app's ingress replica's own output."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray.serve.handle import DeploymentHandle

from chatapp.config import LogSettings, Settings
from chatapp.logs import accepted_request_id, make_handler
from tests.conftest import expect_error, free_port

MISSING = "/api/conversations/00000000-0000-4000-8000-000000000000"


def _api(app_overrides: dict[str, Any], **sections: Any) -> Any:
    from deployments.ingress.app import build_state, create_api

    settings = Settings.from_overrides({**app_overrides, **sections})
    return create_api(build_state(settings, DeploymentHandle("ChatRouter", "chatapp")))


@asynccontextmanager
async def _client(api: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://chatapp", timeout=120) as c:
        yield c


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every log line of this process, as the ingress writes them in production (JSON)."""
    out = io.StringIO()
    handler = make_handler(LogSettings(format="json"), environment="production", stream=out)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _request_line(out: io.StringIO, request_id: str) -> dict[str, Any]:
    (line,) = [
        r
        for r in _lines(out)
        if r["logger"] == "chatapp.access" and r.get("request_id") == request_id
    ]
    return line


async def test_a_turn_is_logged_with_its_fields_and_no_secrets(
    chat_app: str, app_overrides: dict[str, Any], captured: io.StringIO
) -> None:
    password = f"a secret horse {uuid.uuid4().hex[:8]}"
    email = f"logs-{uuid.uuid4().hex[:10]}@example.com"
    question = f"my private question {uuid.uuid4().hex}"
    turn_id = f"turn-{uuid.uuid4().hex}"
    async with _client(_api(app_overrides)) as http:
        created = await http.post("/api/auth/register", json={"email": email, "password": password})
        assert created.status_code == 201, created.text
        tokens = await http.post("/api/auth/token", data={"username": email, "password": password})
        assert tokens.status_code == 200, tokens.text
        access, refresh = tokens.json()["access_token"], tokens.json()["refresh_token"]
        auth = {"Authorization": f"Bearer {access}"}
        me = (await http.get("/api/me", headers=auth)).json()
        conv = (await http.post("/api/conversations", json={"title": ""}, headers=auth)).json()
        reply = await http.post(
            f"/api/conversations/{conv['id']}/messages",
            json={"content": question},
            headers={**auth, "X-Request-ID": turn_id},
        )
        assert reply.status_code == 200 and "event: done" in reply.text, reply.text
        assert reply.headers["x-request-id"] == turn_id  # on the stream's answer too

    line = _request_line(captured, turn_id)
    assert line["method"] == "POST"
    assert line["route"] == "/api/conversations/{conversation_id}/messages"  # not the path
    assert line["status"] == 200 and line["level"] == "INFO"
    assert line["user_id"] == me["id"]
    # written when the stream ended: its duration covers the model's answer
    assert line["duration_ms"] >= line["model_wait_ms"] > 0
    assert "completed" not in line
    login = next(r for r in _lines(captured) if r.get("route") == "/api/auth/token")
    assert login["status"] == 200 and login["request_id"] != turn_id
    everything = captured.getvalue()
    for secret in (password, access, refresh, question, email):
        assert secret not in everything


async def test_core_lines_during_a_request_carry_its_id(
    chat_app: str, app_overrides: dict[str, Any], pg_url: str, captured: io.StringIO
) -> None:
    down = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{free_port()}")
    api = _api(app_overrides, database={"url": down})
    async with _client(api) as http:
        response = await http.get("/readyz", headers={"X-Request-ID": "probe-7"})
    assert response.status_code == 503
    health = [r for r in _lines(captured) if r["logger"] == "chatapp.health"]
    assert health and all(r["request_id"] == "probe-7" for r in health)
    assert "database" in health[0]["message"] and health[0]["level"] == "WARNING"
    line = _request_line(captured, "probe-7")
    assert line["route"] == "/readyz" and line["status"] == 503 and "user_id" not in line


async def test_errors_answered_by_the_app_quote_the_request_id(
    chat_app: str, app_overrides: dict[str, Any], captured: io.StringIO
) -> None:
    async with _client(_api(app_overrides)) as http:
        unauthenticated = await http.get("/api/me", headers={"X-Request-ID": "r-401"})
        invalid = await http.post("/api/auth/register", json={}, headers={"X-Request-ID": "r-422"})
        unknown = await http.get("/api/nothing-here", headers={"X-Request-ID": "r-404"})
    for response, status, request_id in (
        (unauthenticated, 401, "r-401"),
        (invalid, 422, "r-422"),
        (unknown, 404, "r-404"),
    ):
        assert expect_error(response, status)["request_id"] == request_id
        assert response.headers["x-request-id"] == request_id
        line = _request_line(captured, request_id)
        assert line["status"] == status and line["error"]


async def test_cors_lets_pages_read_the_request_id(app_overrides: dict[str, Any]) -> None:
    origin = "https://chat.example.com"
    api = _api(app_overrides, auth={**app_overrides["auth"], "cors_origins": [origin]})
    async with _client(api) as http:
        response = await http.get("/healthz", headers={"Origin": origin})
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "x-chatapp-overhead-ms" in exposed


def test_the_running_app_echoes_a_sane_request_id_and_replaces_others(
    chat_app: str, auth_headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=chat_app, headers=auth_headers, timeout=60) as http:
        sent = http.get(MISSING, headers={"X-Request-ID": "support-ticket-42"})
        assert expect_error(sent, 404)["request_id"] == "support-ticket-42"
        assert sent.headers.get_list("x-request-id") == ["support-ticket-42"]

        made_up = http.get(MISSING)
        (request_id,) = made_up.headers.get_list("x-request-id")
        assert expect_error(made_up, 404)["request_id"] == request_id

        refused = http.get(MISSING, headers={"X-Request-ID": "1; DROP TABLE users"})
        request_id = expect_error(refused, 404)["request_id"]
        assert accepted_request_id(request_id) == request_id
        # ChatApp's id first; Serve's HTTP layer adds back whatever was sent
        assert refused.headers.get_list("x-request-id") == [request_id, "1; DROP TABLE users"]


def _ray_log_lines(containing: str) -> list[str]:
    import ray

    # A replica's standard error, in this Ray session's logs folder
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # type: ignore[attr-defined]
    found = []
    for path in logs.glob("worker-*.err"):
        text = path.read_text(errors="replace")
        found += [line for line in text.splitlines() if containing in line]
    return found


def test_the_ingress_replica_writes_the_line_when_the_stream_ends(
    chat_app: str, auth_headers: dict[str, str]
) -> None:
    request_id = f"replica-{uuid.uuid4().hex}"
    with httpx.Client(base_url=chat_app, headers=auth_headers, timeout=120) as http:
        conv = http.post("/api/conversations", json={"title": ""}).json()["id"]
        with http.stream(
            "POST",
            f"/api/conversations/{conv}/messages",
            json={"content": "Say hello."},
            headers={"X-Request-ID": request_id},
        ) as reply:
            assert reply.headers.get_list("x-request-id") == [request_id]
            body = reply.read().decode()
    assert "event: done" in body
    deadline = time.monotonic() + 20
    lines: list[str] = []
    while not lines and time.monotonic() < deadline:
        time.sleep(0.2)
        lines = [line for line in _ray_log_lines(request_id) if "chatapp.access" in line]
    # the session's app runs in development: readable lines (production writes JSON)
    (line,) = lines
    assert f"[{request_id}] POST /api/conversations/{{conversation_id}}/messages 200" in line


async def test_an_unexpected_error_is_a_500_with_the_id_logged_once(captured: io.StringIO) -> None:
    from fastapi import FastAPI

    from deployments.ingress.access import RequestLog
    from deployments.ingress.errors import install_error_handlers

    api = FastAPI()
    install_error_handlers(api)

    @api.get("/boom/{item}")
    async def boom(item: str) -> None:
        raise RuntimeError(f"bug while handling {item}")

    api.add_middleware(RequestLog)
    async with _client(api) as http:
        response = await http.get("/boom/7", headers={"X-Request-ID": "r-500"})
    error = expect_error(response, 500)
    assert error["request_id"] == "r-500" and error["code"] == "internal_error"
    assert "bug" not in response.text and response.headers["x-request-id"] == "r-500"
    (traceback,) = [r for r in _lines(captured) if r["message"] == "unhandled error"]
    assert traceback["request_id"] == "r-500" and "RuntimeError" in traceback["exc_info"]
    line = _request_line(captured, "r-500")
    assert line["route"] == "/boom/{item}" and line["status"] == 500
    assert line["level"] == "WARNING" and line["error"] == "internal_error"
