"""Every HTTP request's id and log line, as ASGI middleware (the outermost of the app's).

- The request id is the incoming `X-Request-ID` when it is sane (`chatapp.logs`), else a
  new one. It is current while the request runs (every log line carries it, error bodies
  quote it) and is returned as `X-Request-ID` on every response, streams and errors
  included. Under Serve, Serve's own HTTP layer already returns the incoming header
  (making one up when there is none), so the app adds the header only when it refused the
  incoming value: the answer then carries ChatApp's id first, and Serve's echo after it.
- One line per request when its response has ended, a stream's when the stream ends:
  method, route template, status, duration, the user once authenticated, the error code
  it answered (a stream's too). 499: the client left before the response started.
- `/v1` responses carry `X-ChatApp-Overhead-Ms` (`chatapp.overhead`).
- An error nothing else handled is answered here (a 500 in the error envelope, with the
  request id) and logged once with its traceback, instead of escaping to the server.

A plain ASGI middleware, so streamed responses pass through untouched.
"""

from __future__ import annotations

import uuid

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatapp.auth.credentials import CredentialCache, Principal
from chatapp.logs import (
    REQUEST_ID_HEADER,
    accepted_request_id,
    bind_user,
    log_request,
    new_request_id,
    request_scope,
)
from chatapp.overhead import OVERHEAD_HEADER, overhead_ms
from deployments.ingress.errors import error_body

_HEADER = REQUEST_ID_HEADER.lower().encode()
_OVERHEAD_HEADER = OVERHEAD_HEADER.lower().encode()


def route_template(scope: Scope) -> str | None:
    """The matched route's path template (`/api/conversations/{conversation_id}`), None
    when no route matched."""
    route = scope.get("route")
    if route is None:
        return None
    template = str(getattr(route, "path_format", None) or getattr(route, "path", ""))
    if route.__class__.__name__ == "Mount":  # the web page's static files
        return template.rstrip("/") + "/{path}"
    return template or "/"


class RequestLog:
    def __init__(
        self,
        app: ASGIApp,
        *,
        echoed_upstream: bool = False,
        overhead_prefixes: tuple[str, ...] = ("/v1/",),
    ) -> None:
        self.app = app
        self._echoed_upstream = echoed_upstream
        self._overhead_prefixes = overhead_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == _HEADER:
                incoming = value.decode("latin-1")
                break
        request_id = accepted_request_id(incoming) or new_request_id()
        add_header = not (self._echoed_upstream and request_id == incoming)
        status = 499
        started = completed = False
        overhead: float | None = None

        with request_scope(request_id) as context:

            async def send_with_id(message: Message) -> None:
                nonlocal status, started, completed, overhead
                if message["type"] == "http.response.start":
                    started = True
                    status = message["status"]
                    headers = list(message.get("headers", ()))
                    if add_header:
                        headers.append((_HEADER, request_id.encode()))
                    template = route_template(scope)
                    if template is not None and template.startswith(self._overhead_prefixes):
                        overhead = overhead_ms(context)
                        headers.append((_OVERHEAD_HEADER, f"{overhead:g}".encode()))
                    message["headers"] = headers
                elif message["type"] == "http.response.body" and not message.get("more_body"):
                    completed = True
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                if started:
                    raise  # a stream cut short: nothing can be answered any more
                await self._answer_500(exc, send_with_id)
            finally:
                log_request(
                    context,
                    method=scope.get("method", ""),
                    route=route_template(scope),
                    status=status,
                    completed=completed,
                    overhead_ms=overhead,
                )

    @staticmethod
    async def _answer_500(exc: Exception, send: Send) -> None:
        status, body, headers = error_body(exc)  # logs it with its traceback
        response = JSONResponse(body, status_code=status, headers=headers)
        await send(
            {"type": "http.response.start", "status": status, "headers": response.raw_headers}
        )
        await send({"type": "http.response.body", "body": response.body})


class IdentifyingCredentialCache(CredentialCache):
    """The replica's credential cache, telling the current request who its caller is.

    Every successful authentication passes through here: a cache hit returns the
    principal from `cached`, a lookup in SQL stores it with `remember`."""

    async def cached(self, key: str) -> tuple[Principal | None, uuid.UUID | None, bytes | None]:
        principal, user_id, stamp = await super().cached(key)
        if principal is not None:
            bind_user(principal.id)
        return principal, user_id, stamp

    def remember(
        self,
        key: str,
        *,
        user_id: uuid.UUID,
        principal: Principal | None,
        stamp: bytes | None,
        not_after: float,
    ) -> None:
        if principal is not None:
            bind_user(principal.id)
        super().remember(
            key, user_id=user_id, principal=principal, stamp=stamp, not_after=not_after
        )
