"""Security headers as HTTP headers (issue 9, item 16), on a small ASGI app; the running
app's are checked in tests/integration/test_auth_api.py."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from chatapp.config import AuthSettings, Settings
from deployments.ingress.headers import API_CSP, PAGE_CSP, SecurityHeaders


def client(hsts: int = 0) -> TestClient:
    async def page(_: object) -> PlainTextResponse:
        return PlainTextResponse("<html>", media_type="text/html")

    async def api(_: object) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/", page), Route("/api/me", api)])
    return TestClient(SecurityHeaders(app, hsts_max_age_s=hsts))


def test_every_answer_forbids_framing_and_sniffing() -> None:
    with client() as http:
        for path, csp in (("/", PAGE_CSP), ("/api/me", API_CSP)):
            headers = http.get(path).headers
            assert headers["x-frame-options"] == "DENY"
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "no-referrer"
            assert headers["content-security-policy"] == csp
            assert "frame-ancestors 'none'" in csp
            assert "strict-transport-security" not in headers


def test_hsts_when_configured_and_by_default_in_production_over_https() -> None:
    with client(hsts=31536000) as http:
        assert http.get("/").headers["strict-transport-security"].startswith("max-age=31536000")
    https = AuthSettings(public_url="https://chat.example.com")
    secret = "s" * 40
    assert Settings(environment="production", secret_key=secret, auth=https).hsts_max_age_s() > 0
    assert Settings(environment="development", auth=https).hsts_max_age_s() == 0
    assert Settings(auth=AuthSettings(hsts_max_age_s=600)).hsts_max_age_s() == 600
