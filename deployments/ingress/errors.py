"""The one place errors become HTTP: status codes and the OpenAI error envelope
``{"error": {"message", "type", "param", "code", "request_id"}}`` on every route.

`request_id` is the request's `X-Request-ID` (`deployments/ingress/access.py`): a user who
reports an error can quote it, and it finds the request's log lines."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayTaskError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatapp import errors
from chatapp.db.engine import unavailable as database_unavailable
from chatapp.logs import current_request, note_error
from deployments.handles import unwrap

logger = logging.getLogger(__name__)

_STATUS: list[tuple[type[errors.ChatAppError], int]] = [
    (errors.Unauthenticated, 401),
    (errors.NotFound, 404),
    (errors.PermissionDenied, 403),
    (errors.ContextWindowExceeded, 400),
    (errors.Unsupported, 400),
    (errors.InvalidRequest, 422),
    (errors.PayloadTooLarge, 413),
    (errors.Conflict, 409),
    (errors.RateLimited, 429),
    (errors.ServiceUnavailable, 503),
    (errors.ProviderTimeout, 504),
    (errors.ProviderError, 502),
]


def status_of(exc: errors.ChatAppError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def envelope(
    message: str, *, type_: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI error object, with the current request's id (noted for its log line)."""
    error: dict[str, Any] = {"message": message, "type": type_, "param": param, "code": code}
    request = current_request()
    if request is not None:
        error["request_id"] = request.request_id
        note_error(code)
    return {"error": error}


# PostgreSQL refusing a value it cannot store: the request's fault, whichever route's
# input carried it (the routes bound what they know; this is the net under them).
_UNSTORABLE = {
    "22001": "a text is longer than its field allows",  # string_data_right_truncation
    "22003": "a number is out of range",  # numeric_value_out_of_range
    "22021": "a text holds a NUL character (U+0000)",  # character_not_in_repertoire
    "22P05": "a text holds a character the database cannot store",  # untranslatable_character
}


def error_body(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers for any exception (unknown ones are a logged 500)."""
    exc = unwrap(exc)
    if isinstance(exc, DBAPIError) and (why := _UNSTORABLE.get(getattr(exc.orig, "sqlstate", ""))):
        logger.info("refused a value the database cannot store: %s", exc.orig)
        exc = errors.InvalidRequest(f"the request cannot be stored: {why}")
    elif database_unavailable(exc):
        logger.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        exc = errors.ServiceUnavailable(
            "the database cannot be reached right now; retry in a moment", retry_after=2
        )
    headers: dict[str, str] = {}
    if isinstance(exc, errors.ChatAppError):
        status = status_of(exc)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, round(retry_after)))
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        type_ = "invalid_request_error" if status < 500 else "server_error"
        return status, envelope(exc.message, type_=type_, code=exc.code), headers
    logger.exception("unhandled error", exc_info=exc)
    return (
        500,
        envelope("internal server error", type_="server_error", code="internal_error"),
        headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, errors.RateLimited):
            request.app.state.chatapp.auth_metrics.rate_limited.labels(exc.limit).inc()
        status, body, headers = error_body(exc)
        return JSONResponse(body, status_code=status, headers=headers)

    async def on_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = list(exc.errors())
        first = problems[0] if problems else {}
        loc = [str(p) for p in first.get("loc", ())]
        if problems and all(p.get("loc", ("",))[0] == "path" for p in problems):
            # An id that cannot exist is simply not found.
            message = f"{loc[-1].replace('_id', '')} {first.get('input')!s} not found"
            return JSONResponse(
                envelope(message, type_="invalid_request_error", code="not_found"), status_code=404
            )
        if first.get("type") == "json_invalid":
            message = "the request body is not valid JSON"
            code, param = "invalid_json", None
        else:
            param = ".".join(loc[1:]) if loc[:1] == ["body"] else ".".join(loc)
            message = f"{param}: {first.get('msg', 'invalid')}" if param else first.get("msg", "")
            code = "invalid_body"
        body = envelope(message, type_="invalid_request_error", code=code, param=param or None)
        body["error"]["details"] = [
            {"loc": list(p.get("loc", ())), "msg": p.get("msg"), "type": p.get("type")}
            for p in problems
        ]
        return JSONResponse(body, status_code=422)

    async def on_http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            envelope(str(exc.detail), type_="invalid_request_error", code=code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    app.add_exception_handler(RequestValidationError, on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http)  # type: ignore[arg-type]
    app.add_exception_handler(errors.ChatAppError, on_error)
    app.add_exception_handler(RayTaskError, on_error)
    # A database that cannot be reached is an expected 503 (handled here, inside the
    # app: Starlette re-raises what the catch-all below answers, as an unexpected error).
    for database_error in (DBAPIError, SQLAlchemyTimeoutError, ConnectionError, TimeoutError):
        app.add_exception_handler(database_error, on_error)
    app.add_exception_handler(Exception, on_error)
