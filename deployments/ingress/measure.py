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
from deployments.ingress.access import route_template

_GAUGE_EVERY_S = 0.5


class MeasureRequests:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self._metrics = metrics
        self._in_flight = 0
        self._streams = 0
        self._gauged_at = 0.0  # when the gauges were last set

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception the app did not answer
        streaming = False
        self._in_flight += 1

        async def measured(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type" and value.startswith(b"text/event-stream"):
                        streaming = True
                        self._streams += 1
            await send(message)

        try:
            await self.app(scope, receive, measured)
        finally:
            ended = time.perf_counter()
            self._in_flight -= 1
            if streaming:
                self._streams -= 1
            if ended - self._gauged_at >= _GAUGE_EVERY_S or self._in_flight == 0:
                # Sampled under load, not set on every change: each record is a call into
                # Ray's metrics (~6 us), and the agent reports gauges once an interval
                # anyway; set whenever the replica goes idle, so an idle one reads 0.
                self._gauged_at = ended
                self._metrics.in_flight.labels().set(self._in_flight)
                self._metrics.streams.labels().set(self._streams)
            name = route_template(scope) or "unmatched"
            method = scope["method"]
            self._metrics.requests.labels(name, method, str(status)).inc()
            self._metrics.duration.labels(name, method).observe(ended - started)
