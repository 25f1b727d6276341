"""Anthropic's error envelope, `{"type": "error", "error": {"type", "message"},
"request_id"}`, from the HTTP status ChatApp gives an error (the ingress classifies
ChatApp's error classes in one place, `deployments/ingress/errors.py`; this maps its
answer onto Anthropic's error types and status codes)."""

from __future__ import annotations

from typing import Any, Literal

ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
]

# ChatApp's status -> Anthropic's (status, type). Anthropic answers a request it cannot
# serve with 400 (ChatApp: 422), and a service that cannot answer now with 529 (503).
_BY_STATUS: dict[int, tuple[int, ErrorType]] = {
    400: (400, "invalid_request_error"),
    401: (401, "authentication_error"),
    403: (403, "permission_error"),
    404: (404, "not_found_error"),
    405: (405, "invalid_request_error"),
    409: (409, "invalid_request_error"),
    413: (413, "request_too_large"),
    422: (400, "invalid_request_error"),
    429: (429, "rate_limit_error"),
    503: (529, "overloaded_error"),
}


def error_type(status: int) -> tuple[int, ErrorType]:
    """Anthropic's status and error type for ChatApp's `status` (any other failure,
    a provider's included, is a 500 `api_error`)."""
    return _BY_STATUS.get(status, (500, "api_error"))


def error_envelope(
    error: ErrorType, message: str, *, request_id: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "error": {"type": error, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body
