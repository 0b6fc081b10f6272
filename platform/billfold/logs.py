"""Log lines: text or one JSON object per line (``logging.format``), one line per HTTP request and
one per background job.

Everything goes through the standard library's logging, configured with Litestar's
:class:`~litestar.logging.config.LoggingConfig` (a queue handler: the write happens on a listener
thread, not in the request). A request line carries the tracking id (the one an error answers in
``X-Tracking-Id``), the organization, the method, the route template (never the query string),
the status, the error code if any and the duration in milliseconds; no header is ever logged,
and secrets that reach a message anyway (API keys, webhook secrets, bearer tokens) are masked.
"""

from __future__ import annotations

import datetime
import logging
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.enums import ScopeType
from litestar.logging.config import LoggingConfig as LitestarLoggingConfig
from litestar.middleware import ASGIMiddleware

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from billfold.config.schema import LoggingConfig

ACCESS_LOGGER = "billfold.access"
JOBS_LOGGER = "billfold.jobs"
TRACKING_ID = "billfold_tracking_id"
"""Scope key: the request's tracking id (errors answer it in ``X-Tracking-Id``)."""
ERROR_CODE = "billfold_error_code"
"""Scope key: the machine code of the error a request was answered with."""
_ORG_SCOPE = "billfold_org"
_ORG_PATH_PARAMETERS = ("org_id", "organization_id")

_access = logging.getLogger(ACCESS_LOGGER)
_jobs = logging.getLogger(JOBS_LOGGER)
_INFO = logging.INFO

_SECRETS = re.compile(
    r"(?P<key>\b(?:sk|rk|pk)_(?:live|test)_)[A-Za-z0-9]+"
    r"|(?P<whsec>\bwhsec_)[A-Za-z0-9+/=]+"
    r"|(?P<auth>\b(?:[Bb]earer|[Tt]oken|[Bb]asic)\s+)[^\s,;\"']+"
)


def redact(text: str) -> str:
    """``text`` with API keys, webhook secrets and credentials after an auth scheme masked."""
    if "_" not in text and " " not in text:
        return text
    return _SECRETS.sub(lambda m: (m.group("key") or m.group("whsec") or m.group("auth")) + "***", text)


def new_tracking_id() -> str:
    return "trk_" + secrets.token_hex(10)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, then the record's ``fields``
    (structured lines) and the exception, if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return msgspec.json.encode(line).decode()


class TextFormatter(logging.Formatter):
    """``LEVEL - time - logger - message``, secrets masked, the exception below."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s - %(asctime)s - %(name)s - %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def litestar_logging_config(config: LoggingConfig) -> LitestarLoggingConfig:
    """Litestar's logging config for ``config``: the root logger (Billfold's loggers propagate to
    it) through Litestar's queue handler, formatted as text or JSON."""
    formatter = JsonFormatter if config.format == "json" else TextFormatter
    level = config.level.upper()
    return LitestarLoggingConfig(
        formatters={"standard": {"()": formatter}},
        root={"handlers": ["queue_listener"], "level": level},
        # Billfold's loggers are left alone (they inherit the root's level): configuring "billfold"
        # here would make dictConfig strip the handlers off every billfold.* logger.
        loggers={"litestar": {"level": level, "handlers": ["queue_listener"], "propagate": False}},
        log_exceptions="never",  # Billfold's exception handlers log, with the tracking id
    )


def configure_logging(config: LoggingConfig) -> None:
    """For processes that serve no app (``billfold worker``): the same set-up as the app's."""
    litestar_logging_config(config).configure()


class AccessLog(ASGIMiddleware):
    """One line per HTTP request (logger ``billfold.access``, INFO)."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if not _access.isEnabledFor(_INFO):
            await next_app(scope, receive, send)
            return
        started = time.perf_counter()
        tracking_id = new_tracking_id()
        scope[TRACKING_ID] = tracking_id  # type: ignore[literal-required]
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, send_wrapper)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            route = scope.get("path_template") or scope["path"]
            method = scope["method"]  # type: ignore[typeddict-item]  # HTTP only (scopes)
            code = scope.get(ERROR_CODE)
            fields = {
                "event": "request",
                "tracking_id": tracking_id,
                "organization_id": _organization(scope),
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": duration_ms,
            }
            if code is not None:
                fields["code"] = code
            _access.info(
                "%s %s %s%s %.1f ms",
                method,
                route,
                status,
                f" {code}" if code else "",
                duration_ms,
                extra={"fields": fields},
            )


def _organization(scope: Scope) -> str | None:
    """The organization the request acted on: its key's, else the one its path names."""
    found = scope["state"].get(_ORG_SCOPE)
    if found is not None:
        return str(found.org_id)
    params = scope.get("path_params")
    if params:
        for name in _ORG_PATH_PARAMETERS:
            if name in params:
                return str(params[name])
    return None


def log_job(
    kind: str,
    name: str,
    started: float,
    outcome: str,
    *,
    organization_id: object = None,
    level: int = logging.INFO,
    **extra: Any,
) -> None:
    """One line for a background job that just ended (``started``: its ``time.perf_counter()``)."""
    if not _jobs.isEnabledFor(level):
        return
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    fields = {
        "event": "job",
        "kind": kind,
        "job": name,
        "organization_id": None if organization_id is None else str(organization_id),
        "outcome": outcome,
        "duration_ms": duration_ms,
        **extra,
    }
    _jobs.log(level, "%s %s %s %.1f ms", kind, name, outcome, duration_ms, extra={"fields": fields})


def uvicorn_log_config(config: LoggingConfig) -> dict[str, Any] | None:
    """uvicorn's own lines (start-up, shutdown) in the same format; None: uvicorn's default (text)."""
    if config.format != "json":
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": handler},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": config.level.upper(), "propagate": False},
            "uvicorn.error": {"level": config.level.upper()},
        },
    }
