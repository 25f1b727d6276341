"""Security headers on every response, as HTTP headers (issue 9, item 16): a `<meta>`
Content-Security-Policy cannot forbid framing, and the API's answers had none at all.

- `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` everywhere;
- framing forbidden everywhere (`X-Frame-Options: DENY` and CSP `frame-ancestors 'none'`);
- the chat page's full Content-Security-Policy on the page itself; API answers get
  `default-src 'none'` (a JSON answer opened in a browser runs nothing); /docs keeps only
  the framing rule (Swagger UI loads its scripts from a CDN);
- `Strict-Transport-Security` when configured (AUTH_HSTS_MAX_AGE_S, on by default in
  production behind https).

A plain ASGI middleware: it adds header tuples to the response start, so streamed replies
pass through untouched.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = "frame-ancestors 'none'"
_API_PREFIXES = ("/api/", "/v1/", "/healthz", "/readyz", "/metrics")
_DOCS_PREFIXES = ("/docs", "/redoc", "/openapi.json")


def _csp(path: str) -> str:
    if path.startswith(_API_PREFIXES):
        return API_CSP
    if path.startswith(_DOCS_PREFIXES):
        return DOCS_CSP
    return PAGE_CSP


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, hsts_max_age_s: int = 0) -> None:
        self.app = app
        self._common: list[tuple[bytes, bytes]] = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if hsts_max_age_s > 0:
            value = f"max-age={hsts_max_age_s}; includeSubDomains".encode()
            self._common.append((b"strict-transport-security", value))
        self._by_kind = {
            csp: [*self._common, (b"content-security-policy", csp.encode())]
            for csp in (PAGE_CSP, API_CSP, DOCS_CSP)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        extra = self._by_kind[_csp(path)]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
