"""Errors with a machine code; the API turns every one of them into the common envelope."""

from __future__ import annotations

from typing import Any


class BillfoldError(Exception):
    """An error the API reports to the caller with a status and a machine-readable code."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        fix: str | None = None,
        field: str | None = None,
        provider: str | None = None,
        provider_code: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.fix = fix
        self.field = field
        self.provider = provider
        self.provider_code = provider_code
        self.extra = extra or {}
        self.headers = headers or {}


class ValidationFailed(BillfoldError):
    status_code = 400
    code = "validation_error"


class Unauthorized(BillfoldError):
    status_code = 401
    code = "unauthorized"


class PaymentRequired(BillfoldError):
    """Raised when money is not there (or a plugin's cap refuses a debit): HTTP 402."""

    status_code = 402
    code = "insufficient_funds"


class Forbidden(BillfoldError):
    status_code = 403
    code = "forbidden"


class NotFound(BillfoldError):
    status_code = 404
    code = "not_found"


class Conflict(BillfoldError):
    status_code = 409
    code = "conflict"


class Unprocessable(BillfoldError):
    status_code = 422
    code = "unprocessable"


class ProviderUnavailable(BillfoldError):
    status_code = 502
    code = "provider_unavailable"


class ProviderRefused(BillfoldError):
    """The payment provider answered but refused the request (bad keys, a request it rejects):
    502 like an outage, but retrying the same request will not help."""

    status_code = 502
    code = "provider_error"


class RetryLater(Exception):
    """Raised by an outbox event handler to be called again in ``seconds`` (instead of the
    worker's backoff), e.g. after a 429 with Retry-After."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {seconds} s")
        self.seconds = seconds
        self.reason = reason


class StartupError(Exception):
    """Raised at start-up (by the core or a plugin) to refuse to start with a clear message."""
