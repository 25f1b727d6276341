"""Request body size limit as ASGI middleware: 413 before the app sees a byte too many.

Hand-written because Starlette has no body-size limit and the check must also cover
chunked bodies without a Content-Length. A declared Content-Length over the limit is
refused at once (the server delivers no more than it declares). A body without one is
read here, up to the limit, before the app runs: raising from inside the app's
`receive` does not work, because FastAPI turns any error while it parses a body into
400 "There was an error parsing the body".

`larger` names paths that take bigger bodies (the import of an export file, uploads to
a knowledge base), each with its own limit; `{name}` in a path matches one segment.
Anthropic's Messages API (`/v1/messages`) gets the refusal in Anthropic's envelope, as
its SDKs read it (`request_too_large`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatapp.anthropic_api.errors import error_envelope, error_type
from chatapp.logs import current_request
from deployments.ingress.errors import envelope

ANTHROPIC_PATHS = "/v1/messages"


class BodySizeLimit:
    def __init__(
        self, app: ASGIApp, *, max_bytes: int, larger: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = [
            (re.compile(re.sub(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(path)) + "$"), limit)
            for path, limit in (larger or {}).items()
        ]

    def limit(self, path: str) -> int:
        """The body limit of `path`."""
        for pattern, limit in self.larger:
            if pattern.match(path):
                return limit
        return self.max_bytes

    async def _reject(self, send: Send, max_bytes: int, path: str) -> None:
        message = f"request body is larger than {max_bytes} bytes"
        if path.startswith(ANTHROPIC_PATHS):
            context = current_request()
            _, kind = error_type(413)
            shaped = error_envelope(kind, message, request_id=context and context.request_id)
        else:
            shaped = envelope(message, type_="invalid_request_error", code="payload_too_large")
        body = json.dumps(shaped).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):  # mounted under a prefix (Serve's route_prefix)
            path = path[len(root) :]
        max_bytes = self.limit(path)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    await self._reject(send, max_bytes, path)
                    return
                await self.app(scope, receive, send)
                return
        # No Content-Length (chunked, or no body): read the body here, up to the limit.
        parts: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk: bytes = message.get("body", b"")
            seen += len(chunk)
            if seen > max_bytes:
                await self._reject(send, max_bytes, path)
                return
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        buffered: Message | None = {
            "type": "http.request",
            "body": b"".join(parts),
            "more_body": False,
        }

        async def replay() -> Message:
            nonlocal buffered
            if buffered is not None:
                message, buffered = buffered, None
                return message
            return await receive()  # later: the disconnect, for streaming responses

        await self.app(scope, replay, send)
