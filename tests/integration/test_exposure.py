"""Deployment exposure (issue 9, item 13): in production the ingress serves no API docs or
schema, and /metrics only to a scraper presenting the metrics token. The FastAPI app is
built as a production replica builds it, over the running app's Ray deployments (the real
router answers /metrics)."""

from __future__ import annotations

from typing import Any

import httpx
from ray.serve.handle import DeploymentHandle

from chatapp.config import Settings
from tests.conftest import expect_error


def _production_api(app_overrides: dict[str, Any], **serve: Any) -> Any:
    """The ingress's FastAPI app as a production replica builds it."""
    from deployments.ingress.app import build_state, create_api

    settings = Settings.from_overrides(
        {
            **app_overrides,
            "environment": "production",
            "secret_key": "k" * 40,
            "serve": {**app_overrides["serve"], **serve},
        }
    )
    return create_api(build_state(settings, DeploymentHandle("ChatRouter", "chatapp")))


async def _get(api: Any, path: str, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://chatapp") as http:
        return await http.get(path, headers=headers)


async def test_production_serves_no_api_docs_and_no_public_metrics(
    chat_app: str, app_overrides: dict[str, Any]
) -> None:
    api = _production_api(app_overrides)
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/metrics"):
        assert expect_error(await _get(api, path), 404)["code"] == "not_found", path
    assert (await _get(api, "/healthz")).status_code == 200

    # /metrics with a token: only the scraper that presents it
    token = "scrape-" + "s" * 32
    guarded = _production_api(app_overrides, metrics_token=token)
    assert expect_error(await _get(guarded, "/metrics"), 401)["code"]
    assert expect_error(await _get(guarded, "/metrics", authorization="Bearer nope"), 401)["code"]
    scraped = await _get(guarded, "/metrics", authorization=f"Bearer {token}")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")

    # on in production when asked for; on by default in development (the running app)
    shown = _production_api(app_overrides, docs_enabled=True)
    assert (await _get(shown, "/openapi.json")).status_code == 200
    async with httpx.AsyncClient(base_url=chat_app) as http:
        assert (await http.get("/openapi.json")).status_code == 200
