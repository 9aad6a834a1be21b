"""Errors the application layer raises and the HTTP layer turns into problem responses."""

from __future__ import annotations


class CrmError(Exception):
    """Base of the errors a command or query can end with."""

    status = 500
    title = "Internal Server Error"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class Unauthorized(CrmError):
    status = 401
    title = "Unauthorized"


class Forbidden(CrmError):
    status = 403
    title = "Forbidden"


class NotFound(CrmError):
    status = 404
    title = "Not Found"


class Conflict(CrmError):
    """A business rule forbids the command in the aggregate's current state."""

    status = 409
    title = "Conflict"


class DomainError(Conflict):
    """Raised by aggregate methods when an invariant would be broken."""


class PreconditionFailed(CrmError):
    status = 412
    title = "Precondition Failed"


class ConcurrencyError(PreconditionFailed):
    """The stream moved on since the caller read it (optimistic concurrency)."""

    def __init__(self, stream_id: str, expected: int, actual: int | None = None) -> None:
        detail = (
            f"stream is at version {actual}, not {expected}"
            if actual is not None
            else (f"stream changed concurrently; expected version {expected}")
        )
        super().__init__(detail, expected_version=expected, current_version=actual)
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class InvalidInput(CrmError):
    """Input that passed the schema but fails a check done in code; names the field."""

    status = 422
    title = "Unprocessable Content"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", errors=[{"field": field, "reason": reason}])


class TooManyRequests(CrmError):
    """A client sent more requests than its limit; ``retry_after`` seconds until it may again."""

    status = 429
    title = "Too Many Requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many requests; try again in {retry_after} s", retry_after=retry_after
        )
