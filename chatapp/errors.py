"""ChatApp's exception tree. Lower-level errors are translated at one boundary each.

    ChatAppError
    ├── Unauthenticated       missing, invalid, expired or revoked credentials (401)
    ├── NotFound              unknown or foreign object (404)
    ├── PermissionDenied      authenticated but not allowed (403)
    ├── InvalidRequest        the request cannot be served as asked (422)
    │   └── Unsupported       it asks for what the model or ChatApp does not do (400)
    ├── PayloadTooLarge       body over the configured limit (413)
    ├── Conflict              a concurrent or stale write lost (409)
    ├── RateLimited           slow down; carries retry_after (429)
    ├── ServiceUnavailable    a part is starting or restarting (503)
    └── ProviderError         an LLM backend failed (502)
        ├── ProviderTimeout
        ├── ProviderRateLimited
        ├── ProviderAuth
        └── ContextWindowExceeded   prompt too long for the model (400)

The core raises these; only the ingress maps them to HTTP status codes. An error that
crosses a process boundary as data (a stream that failed after its first token) is
rebuilt into its own class from its code by `from_code`, the one place that does it.
"""

from __future__ import annotations


class ChatAppError(Exception):
    """Base of every error ChatApp raises on purpose."""

    code = "internal_error"
    retry_after: float | None = None  # seconds to wait before retrying, where that applies

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        # Keep subclass fields when the error crosses a Ray boundary.
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type[ChatAppError], state: dict[str, object]) -> ChatAppError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class Unauthenticated(ChatAppError):
    code = "invalid_token"


class NotFound(ChatAppError):
    code = "not_found"


class PermissionDenied(ChatAppError):
    code = "permission_denied"


class InvalidRequest(ChatAppError):
    code = "invalid_request"


class Unsupported(InvalidRequest):
    """A well-formed request for something the chosen model (or ChatApp) does not do:
    tools for a model that cannot call them, a field whose effect would be ignored."""

    code = "unsupported"


class PayloadTooLarge(ChatAppError):
    code = "payload_too_large"


class Conflict(ChatAppError):
    code = "conflict"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # when it is worth trying again (a turn's lease)


class WriteConflict(Conflict):
    """Another writer already stored this message's place: the writer's copy of the
    conversation was stale (e.g. it moved to another shard and back)."""


class RateLimited(ChatAppError):
    code = "rate_limited"

    def __init__(
        self, message: str, *, retry_after: float | None = None, limit: str = "requests"
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit  # which limit, for metrics: "logins", "monthly_budget", ...


class ServiceUnavailable(ChatAppError):
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderError(ChatAppError):
    code = "provider_error"


class ProviderTimeout(ProviderError):
    code = "provider_timeout"


class ProviderRateLimited(ProviderError):
    code = "provider_rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderAuth(ProviderError):
    code = "provider_auth"


class ContextWindowExceeded(ProviderError):
    code = "context_window_exceeded"


def _subclasses(cls: type[ChatAppError]) -> list[type[ChatAppError]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _subclasses(sub))]


class BackupError(ChatAppError):
    """A backup or restore could not be made; the message says why and what to do."""

    code = "backup_failed"


def from_code(code: str, message: str, *, retry_after: float | None = None) -> ChatAppError:
    """The error of class `code` (e.g. ``provider_timeout`` -> `ProviderTimeout`), with its
    retry hint where the class has one; an unknown code is a plain `ChatAppError`."""
    by_code: dict[str, type[ChatAppError]] = {}
    for cls in _subclasses(ChatAppError):
        by_code.setdefault(cls.code, cls)  # a base class before its subclasses
    err = _rebuild(by_code.get(code, ChatAppError), {"message": message})
    if retry_after is not None:
        err.retry_after = retry_after
    return err
