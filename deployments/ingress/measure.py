"""Every HTTP request measured (`chatapp.observability.metrics.HttpMetrics`): requests by
route template, method and status; latency to the end of the response (a stream's end
included); requests in flight and server-sent-event streams open in this replica.

Pure ASGI (no response buffering, streams pass through untouched). Routes are their
templates (`/api/conversations/{conversation_id}`), never raw paths, so labels stay
bounded; a path no route matched is `unmatched`.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatapp.observability.metrics import HttpMetrics


class MeasureRequests:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self._metrics = metrics
        self._in_flight = 0
        self._streams = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception the app did not answer
        streaming = False
        self._in_flight += 1
        self._metrics.in_flight.labels().set(self._in_flight)

        async def measured(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type" and value.startswith(b"text/event-stream"):
                        streaming = True
                        self._streams += 1
                        self._metrics.streams.labels().set(self._streams)
            await send(message)

        try:
            await self.app(scope, receive, measured)
        finally:
            self._in_flight -= 1
            self._metrics.in_flight.labels().set(self._in_flight)
            if streaming:
                self._streams -= 1
                self._metrics.streams.labels().set(self._streams)
            route = scope.get("route")
            template = getattr(route, "path", None)
            name = (template or "/") if route is not None else "unmatched"
            method = scope["method"]
            self._metrics.requests.labels(name, method, str(status)).inc()
            self._metrics.duration.labels(name, method).observe(time.perf_counter() - started)
