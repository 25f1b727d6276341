"""PostgreSQL away (down, restarting): requests that need it get a clean 503 with
Retry-After in the one error envelope, never a 500, and the replica answers again by
itself once the database is back. The ingress's FastAPI app is built as a replica builds
it; its database URL points at a port where nothing listens (the shared server is left
alone), then at the real one."""

from __future__ import annotations

from typing import Any

import httpx
from ray.serve.handle import DeploymentHandle

from chatapp.config import Settings
from tests.conftest import free_port


def _api(app_overrides: dict[str, Any], database_url: str) -> Any:
    from deployments.ingress.app import build_state, create_api

    settings = Settings.from_overrides({**app_overrides, "database": {"url": database_url}})
    return create_api(build_state(settings, DeploymentHandle("ChatRouter", "chatapp")))


async def _login(api: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://chatapp") as http:
        return await http.post(
            "/api/auth/token", data={"username": "someone@example.com", "password": "x" * 12}
        )


async def test_a_database_that_cannot_be_reached_is_a_503_with_retry_after(
    chat_app: str, app_overrides: dict[str, Any], pg_url: str
) -> None:
    down = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{free_port()}")
    response = await _login(_api(app_overrides, down))
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "service_unavailable" and "database" in error["message"]
    # the same request against a database that answers: an ordinary wrong-password 401
    assert (await _login(_api(app_overrides, pg_url))).status_code == 401
