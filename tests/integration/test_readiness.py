"""GET /readyz (issue 13): each dependency's status, 503 with Retry-After naming what
fails when a required one does, an answer within about two seconds even when a
dependency hangs, and nothing internal (addresses, ports) in the body.

The running app answers for itself; outages are played on the ingress's FastAPI app built
as a replica builds it (over the running app's router), its database or Redis pointed at
a port where nothing listens, at a socket that accepts and never answers, or at a private
redis-server that is stopped and started (the shared servers are left alone)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from ray.serve.handle import DeploymentHandle

from chatapp.config import Settings
from tests.conftest import free_port
from tests.integration.test_redis_outage import PrivateRedis


def _api(app_overrides: dict[str, Any], **sections: Any) -> Any:
    from deployments.ingress.app import build_state, create_api

    settings = Settings.from_overrides({**app_overrides, "readiness": {"cache_s": 0}, **sections})
    return create_api(build_state(settings, DeploymentHandle("ChatRouter", "chatapp")))


async def _readyz(api: Any) -> tuple[httpx.Response, float]:
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://chatapp") as http:
        started = time.perf_counter()
        response = await http.get("/readyz")
        return response, time.perf_counter() - started


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never says a word (a hung dependency)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def _no_internals(response: httpx.Response, *ports: int) -> None:
    for secret in ("127.0.0.1", "postgres", "redis://", *(str(p) for p in ports)):
        assert secret not in response.text


def test_the_running_app_is_ready(chat_app: str) -> None:
    assert httpx.get(f"{chat_app}/healthz").json() == {"status": "ok"}
    response = httpx.get(f"{chat_app}/readyz", timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    checks = body["checks"]
    for name in ("database", "redis", "models"):
        assert checks[name]["status"] == "ok", checks
    assert checks["database"]["required"] and checks["models"]["required"]
    assert not checks["redis"]["required"] and not checks["knowledge_base"]["required"]
    # The session's app serves an empty index folder: no default knowledge base, so it
    # answers without grounding, which /readyz reports without leaving the rotation.
    if checks["knowledge_base"]["status"] == "ok":
        assert body["status"] == "ready"
    else:
        assert body["status"] == "degraded"
        assert checks["knowledge_base"]["reason"] == (
            "the default knowledge base 'docs' is not loaded"
        )
    _no_internals(response, 5432, 6379)


async def test_an_unreachable_database_is_a_503_naming_it(
    chat_app: str, app_overrides: dict[str, Any], pg_url: str
) -> None:
    port = free_port()
    down = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
    response, _ = await _readyz(_api(app_overrides, database={"url": down}))
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"]["status"] == "failing"
    assert body["checks"]["database"]["reason"]
    assert body["checks"]["models"]["status"] == "ok"  # only the database is named
    _no_internals(response, port)


async def test_a_hanging_database_still_gets_an_answer_within_two_seconds(
    chat_app: str, app_overrides: dict[str, Any], pg_url: str
) -> None:
    with silent_server() as port:
        hung = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
        response, took = await _readyz(_api(app_overrides, database={"url": hung}))
    assert response.status_code == 503 and took < 2.5, (took, response.text)
    assert response.json()["checks"]["database"]["reason"] == "no answer within 1.5 s"
    assert response.json()["checks"]["models"]["status"] == "ok"


async def test_redis_going_away_is_reported_and_its_return_seen(
    chat_app: str, app_overrides: dict[str, Any]
) -> None:
    server = PrivateRedis()
    server.start()
    try:
        redis = {**app_overrides["redis"], "url": server.url}
        api = _api(app_overrides, redis=redis)
        strict = _api(
            app_overrides, redis=redis, readiness={"cache_s": 0, "required": ["database", "redis"]}
        )
        response, _ = await _readyz(api)
        assert response.json()["checks"]["redis"]["status"] == "ok"

        server.stop()
        # ChatApp keeps answering without Redis (limits counted per replica): degraded...
        response, _ = await _readyz(api)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "degraded"
        assert response.json()["checks"]["redis"]["status"] == "failing"
        # ...unless the operator made Redis required: then not ready, naming it
        response, _ = await _readyz(strict)
        assert response.status_code == 503 and response.headers["retry-after"]
        checks = response.json()["checks"]
        assert checks["redis"]["status"] == "failing" and checks["database"]["status"] == "ok"
        _no_internals(response, server.port)

        server.start()
        response, _ = await _readyz(strict)
        assert response.status_code == 200 and response.json()["checks"]["redis"]["status"] == "ok"
    finally:
        server.stop()


async def test_a_hanging_redis_still_gets_an_answer_within_two_seconds(
    chat_app: str, app_overrides: dict[str, Any]
) -> None:
    with silent_server() as port:
        redis = {**app_overrides["redis"], "url": f"redis://127.0.0.1:{port}/0"}
        response, took = await _readyz(_api(app_overrides, redis=redis))
    assert response.status_code == 200 and took < 2.5, (took, response.text)
    assert response.json()["checks"]["redis"]["reason"] == "no answer within 1.5 s"
