"""Request logs: one structured line per HTTP request, and a request id on every line
written while the request runs.

- `RequestContext` is what one request knows about itself (its id, the user once
  authenticated, the error it answered, the time it waited on the model); it lives in a
  context variable for the request's duration (`request_scope`), so tasks the request
  starts (a streamed reply, a usage write) carry it too.
- `ContextFilter` adds `request_id` and `user_id` to every record written meanwhile,
  whichever module wrote it; `log_request` writes the request's own line.
- `configure_logging` makes the process's root logger write JSON lines (python-json-logger)
  or readable text lines, as `LogSettings` says.

Nothing here logs credentials, passwords, prompts or answers: the request line carries
the method, the route template (never the raw path or query), the status and timings.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import IO, Any

from pythonjsonlogger.json import JsonFormatter

from chatapp.config import LogSettings

REQUEST_ID_HEADER = "X-Request-ID"
ACCESS_LOGGER = "chatapp.access"

# An incoming request id is kept when it looks like one (uuids, hex, base64, dotted or
# colon-separated tracing ids) and is short: anything else could forge log fields or fill
# the logs, and is replaced by a fresh id.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")

access_logger = logging.getLogger(ACCESS_LOGGER)


def accepted_request_id(value: str | None) -> str | None:
    """`value` if it is a sane request id (at most 128 characters of a safe set), else None."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class RequestContext:
    """One HTTP request, as its log line and its error bodies describe it."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    user_id: str | None = None
    error: str | None = None  # the error code it answered (also inside a stream)
    model_wait_s: float = 0.0  # time spent waiting on the model router

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started


_current: ContextVar[RequestContext | None] = ContextVar("chatapp_request", default=None)


def current_request() -> RequestContext | None:
    """The request being served in this context, if any."""
    return _current.get()


@contextmanager
def request_scope(request_id: str) -> Iterator[RequestContext]:
    """Make a new request current for the enclosed code (and the tasks it starts)."""
    context = RequestContext(request_id)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def bind_user(user_id: object) -> None:
    """The current request's caller is now known (its id only)."""
    context = _current.get()
    if context is not None:
        context.user_id = str(user_id)


def note_error(code: str | None) -> None:
    """The current request answered this error (kept for its log line)."""
    context = _current.get()
    if context is not None and code:
        context.error = code


def log_request(
    context: RequestContext,
    *,
    method: str,
    route: str | None,
    status: int,
    completed: bool,
    overhead_ms: float | None = None,
) -> None:
    """The request's own line, written when its response has ended (a stream's too)."""
    duration_ms = round(context.elapsed_s() * 1000, 1)
    fields: dict[str, Any] = {
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
    }
    if context.model_wait_s:
        fields["model_wait_ms"] = round(context.model_wait_s * 1000, 1)
    if overhead_ms is not None:
        fields["overhead_ms"] = overhead_ms
    if context.error:
        fields["error"] = context.error
    if not completed:
        fields["completed"] = False  # the client went away, or the stream was cut
    level = logging.WARNING if status >= 500 else logging.INFO
    access_logger.log(
        level, "%s %s %d %.1f ms", method, route or "-", status, duration_ms, extra=fields
    )


class ContextFilter(logging.Filter):
    """Adds the current request's `request_id` and `user_id` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current.get()
        if context is not None:
            if not hasattr(record, "request_id"):
                record.request_id = context.request_id
            if context.user_id is not None and not hasattr(record, "user_id"):
                record.user_id = context.user_id
        return True


_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def make_handler(
    settings: LogSettings, *, environment: str, stream: IO[str] | None = None
) -> logging.Handler:
    """A handler writing to `stream` in the configured format, with the request context on
    every line. By default the process's own standard error, even where `sys.stderr` was
    replaced: Serve's fast path sends a replica's `sys.stderr` into its own logger, which
    buffers a thousand lines before writing any."""
    handler = logging.StreamHandler(stream or sys.__stderr__ or sys.stderr)
    formatter: logging.Formatter
    if settings.format_for(environment) == "json":
        # time, level, logger and message first; then any `extra` fields of the record
        # (request_id, user_id, method, route, ...); tracebacks as `exc_info`.
        formatter = JsonFormatter(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
    else:
        formatter = logging.Formatter(_TEXT_FORMAT, defaults={"request_id": "-"})
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(settings: LogSettings, *, environment: str) -> None:
    """The process's root logger writes through `make_handler` at `settings.level`,
    replacing its handlers: every module's lines (ChatApp's and its libraries') come out
    in one format. For the process that serves requests (an ingress replica)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(settings, environment=environment))
    root.setLevel(settings.level)
