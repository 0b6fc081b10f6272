"""Log lines: text or one JSON object per line (``logging.format``), one line per HTTP request and
one per background job.

Everything is configured through the standard library's logging, with Litestar's
:class:`~litestar.logging.config.LoggingConfig` (a queue handler: the write happens on a listener
thread, not in the request). The request lines have their own handler, a :class:`LineWriter` on
the logger ``billfold.access``: the middleware hands it the line's parts, without a LogRecord, and
the writer formats and writes the lines in batches from a thread (see :class:`LineWriter` for why
and what it costs), so a request's line may follow the lines logged after it by up to 0.1 s (each
line has its time). A request line carries the tracking id (the one an error answers in
``X-Tracking-Id``), the organization, the method, the route template (never the query string),
the status, the error code if any and the duration in milliseconds; no header is ever logged,
and secrets that reach a message anyway (API keys, webhook secrets, bearer tokens) are masked.
"""

from __future__ import annotations

import collections
import datetime
import functools
import logging
import os
import random
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

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


# Tracking ids are no secret (they name a request in its answer and its log lines): drawn from a
# generator of their own (seeded by the system, again in a forked child, never by a random.seed()
# elsewhere), without the system call of secrets.token_hex (1 to 3 µs a request).
_tracking_ids = random.Random()
os.register_at_fork(after_in_child=_tracking_ids.seed)


def new_tracking_id() -> str:
    return f"trk_{_tracking_ids.getrandbits(80):020x}"


class _Clock:
    """The time part of a line, computed once a second (``datetime`` and ``strftime`` cost a few
    µs a line)."""

    def __init__(self) -> None:
        self._cached = (-1, "", "")  # second, its UTC and its local text: one tuple, read at once

    def utc(self, created: float) -> str:
        """``created`` as ``datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")``."""
        second = int(created)  # rounded as datetime rounds: the fraction alone, to microseconds
        micros = round((created - second) * 1_000_000)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        cached = self._cached
        if cached[0] != second:
            cached = self._refresh(second)
        return f"{cached[1]}.{micros // 1000:03d}+00:00"

    def local(self, created: float) -> str:
        """``created`` as :meth:`logging.Formatter.formatTime` writes it (local time, ``,msecs``)."""
        second = int(created)
        cached = self._cached
        if cached[0] != second:
            cached = self._refresh(second)
        return f"{cached[2]},{int((created - second) * 1000):03d}"

    def _refresh(self, second: int) -> tuple[int, str, str]:
        utc = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cached = (second, utc, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))
        self._cached = cached
        return cached


_clock = _Clock()


class LineFormatter(logging.Formatter):
    """A formatter that can also write a line from its parts, without a LogRecord."""

    def ready_line(
        self, level: str, logger: str, message: str, fields: dict[str, Any], created: float
    ) -> str:
        """The line :meth:`format` would write for a record of ``logger`` at ``level`` (its name,
        ``INFO``) made at ``created`` whose message is ``message`` (already masked) and whose
        ``fields`` are ``fields``."""
        raise NotImplementedError


class JsonFormatter(LineFormatter):
    """One JSON object per line: time (UTC), level, logger, message, then the record's ``fields``
    (structured lines) and the exception, if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _clock.utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return _json.encode(line).decode()

    def ready_line(
        self, level: str, logger: str, message: str, fields: dict[str, Any], created: float
    ) -> str:
        line = {"time": _clock.utc(created), "level": level.lower(), "logger": logger, "message": message}
        line.update(fields)
        return _json.encode(line).decode()


_json = msgspec.json.Encoder()


class TextFormatter(LineFormatter):
    """``LEVEL - time - logger - message``, secrets masked, the exception below."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s - %(asctime)s - %(name)s - %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _clock.local(record.created) if datefmt is None else super().formatTime(record, datefmt)

    def ready_line(
        self, level: str, logger: str, message: str, fields: dict[str, Any], created: float
    ) -> str:
        return f"{level} - {_clock.local(created)} - {logger} - {message}"


class LineWriter(logging.Handler):
    """Writes lines to ``stream`` in batches, from a thread: every ``interval`` seconds, or as soon
    as ``batch`` lines wait; :meth:`flush` writes the waiting lines at once (the app's shutdown
    calls it, and so does :func:`logging.shutdown` at exit and when logging is configured again).

    :meth:`write_line` takes a line, or a function that makes it, which the writing thread calls
    (the request path: a deque append); a record logged the usual way is formatted in the caller.

    Why not the standard library's path (bench/access_log.py --alternatives: one JSON line, CPU
    of every thread of the process): 21 µs through ``logger.info`` and Litestar's queue handler (a
    LogRecord, the caller's frame, the formatting in the request, a wake-up of the listener thread,
    a write and a flush per line); no less without caller, thread and process information
    (``logging._srcfile = None``, ``logging.logThreads = False``...); 12 µs with the line formatted
    beforehand and a QueueHandler whose ``prepare`` does not format; 9 to 11 µs through
    ``logger.info`` into this writer (the LogRecord, and the formatter masking the whole message).
    Given to :meth:`write_line`: 2.4 µs for the formatted line, 4.8 µs for its parts (formatting
    included). In the app (bench/access_log.py, ``GET /v1/admin/clock``), the request line added
    87 to 118 µs to a request through Litestar's queue handler, 7 to 11 µs through this writer;
    formatted by the writing thread rather than in the request, 3 to 4 µs less than formatted in
    the request (the lines formatted in a row, the request path shorter).
    ``logging.handlers.MemoryHandler`` batches too, but takes LogRecords and flushes only when full
    (a quiet server would hold its lines), in the caller's thread.
    """

    interval: float = 0.1
    """Seconds between two writes of the lines waiting."""
    batch: int = 512
    """Lines waiting that wake the writing thread before ``interval``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = sys.stderr if stream is None else stream
        self._waiting: collections.deque[str | Callable[[], str]] = collections.deque()
        self._wake = threading.Event()
        self._flushing = threading.Lock()  # one write at a time: the lines stay in order
        self._closed = False
        self._thread = threading.Thread(target=self._write_every_interval, name="billfold-lines", daemon=True)
        self._thread.start()

    def write_line(self, line: str | Callable[[], str]) -> None:
        """Write ``line`` (without its line break) with the next batch; given a function, the
        writing thread calls it for the line, so the caller spends an append only."""
        waiting = self._waiting
        waiting.append(line)  # atomic: any thread may write, and the writing thread take
        if len(waiting) >= self.batch and not self._wake.is_set():
            self._wake.set()
        if self._closed:
            self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record))
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Write every line waiting, now."""
        with self._flushing:
            waiting = self._waiting
            if not waiting:
                return
            lines = []
            for _ in range(len(waiting)):
                line = waiting.popleft()
                if not isinstance(line, str):
                    try:
                        line = line()
                    except Exception:
                        _report_error()
                        continue
                lines.append(line)
            lines.append("")
            try:
                self.stream.write("\n".join(lines))
                self.stream.flush()
            except ValueError:
                # A stream closed under the writer (a test's captured stderr, once the test is
                # over) takes nothing more: the lines have nowhere to go.
                if not getattr(self.stream, "closed", False):
                    _report_error()
            except Exception:
                _report_error()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.flush()
        super().close()

    def _write_every_interval(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()


def _report_error() -> None:
    """As :meth:`logging.Handler.handleError`: the traceback on the process's own stderr."""
    if logging.raiseExceptions:
        traceback.print_exc(file=sys.__stderr__)


def flush_request_lines() -> None:
    """Write the request lines still waiting (at the app's shutdown: none is lost when the process
    ends without the interpreter's exit handlers)."""
    for handler in _access.handlers:
        handler.flush()


def litestar_logging_config(
    config: LoggingConfig, *, request_lines: bool | None = None
) -> LitestarLoggingConfig:
    """Litestar's logging config for ``config``: the root logger (Billfold's loggers propagate to
    it) through Litestar's queue handler, formatted as text or JSON; with ``request_lines``
    (default: ``config.requests``) the logger ``billfold.access`` through a :class:`LineWriter` on
    the same stream (the ``sys.stderr`` of the moment logging is configured, as the queue
    handler's), in the same format."""
    formatter = JsonFormatter if config.format == "json" else TextFormatter
    level = config.level.upper()
    # Billfold's loggers are left alone (they inherit the root's level): configuring "billfold"
    # here would make dictConfig strip the handlers off every billfold.* logger.
    loggers: dict[str, dict[str, Any]] = {
        "litestar": {"level": level, "handlers": ["queue_listener"], "propagate": False}
    }
    handlers: dict[str, dict[str, Any]] = {}
    if config.requests if request_lines is None else request_lines:
        handlers["request_lines"] = {"()": LineWriter, "formatter": "standard", "stream": "ext://sys.stderr"}
        loggers[ACCESS_LOGGER] = {"handlers": ["request_lines"], "propagate": False}
    else:  # and not the writer of an earlier configuration in this process
        loggers[ACCESS_LOGGER] = {"handlers": [], "propagate": True}
    return LitestarLoggingConfig(
        formatters={"standard": {"()": formatter}},
        handlers=handlers,
        root={"handlers": ["queue_listener"], "level": level},
        loggers=loggers,
        log_exceptions="never",  # Billfold's exception handlers log, with the tracking id
    )


def configure_logging(config: LoggingConfig) -> None:
    """For processes that serve no app (``billfold worker``): the same set-up as the app's, without
    the request lines' writer."""
    litestar_logging_config(config, request_lines=False).configure()


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
            parts: tuple[Any, ...] = (
                time.perf_counter() - started,
                tracking_id,
                scope.get("path_template"),
                scope["path"],
                scope["method"],  # type: ignore[typeddict-item]  # HTTP only (scopes)
                status,
                scope.get(ERROR_CODE),
                _organization(scope),
            )
            found = _request_writer()
            if found is None:
                message, fields = _request_line_parts(*parts)
                if fields["organization_id"] is not None:  # text, for any formatter
                    fields["organization_id"] = str(fields["organization_id"])
                _access.info("%s", message, extra={"fields": fields})
            else:  # formatted by the writing thread
                writer, formatter = found
                writer.write_line(functools.partial(_request_line, formatter, time.time(), *parts))


def _request_line(formatter: LineFormatter, created: float, *parts: Any) -> str:
    message, fields = _request_line_parts(*parts)
    return formatter.ready_line("INFO", ACCESS_LOGGER, message, fields, created)


def _request_line_parts(
    duration: float,
    tracking_id: str,
    template: str | None,
    path: str,
    method: str,
    status: int,
    code: str | None,
    organization: object,
) -> tuple[str, dict[str, Any]]:
    """A request line's message and fields.

    Masked where a secret could be: the path a client sent (when no route template matched), the
    method, an organization named in the path. The route template, the status and the error code
    are the app's own, so the message, made of these parts, needs no masking of its own.
    """
    duration_ms = round(duration * 1000, 3)
    route = template or redact(path)
    method = redact(method)
    if organization is not None and type(organization) is not uuid.UUID:
        organization = redact(str(organization))  # a UUID: msgspec writes its text
    fields: dict[str, Any] = {
        "event": "request",
        "tracking_id": tracking_id,
        "organization_id": organization,
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
    }
    if code is not None:
        fields["code"] = code
    return f"{method} {route} {status}{f' {code}' if code else ''} {duration_ms:.1f} ms", fields


def _request_writer() -> tuple[LineWriter, LineFormatter] | None:
    """The :class:`LineWriter` that alone receives ``billfold.access``'s records and its formatter,
    when a line can skip the LogRecord (no filter, a formatter of ready lines); else None."""
    handlers = _access.handlers
    if len(handlers) != 1 or _access.propagate or _access.filters:
        return None
    handler = handlers[0]
    formatter = handler.formatter
    if (
        type(handler) is LineWriter
        and isinstance(formatter, LineFormatter)
        and not handler.filters
        and handler.level <= _INFO
    ):
        return handler, formatter
    return None


def _organization(scope: Scope) -> object:
    """The organization the request acted on: its key's, else the one its path names (some routes
    take any string there); None."""
    found = scope["state"].get(_ORG_SCOPE)
    if found is not None:
        return found.org_id
    params = scope.get("path_params")
    if params:
        for name in _ORG_PATH_PARAMETERS:
            if name in params:
                return params[name]
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
    # Through the queue handler, not a LineWriter: a job costs milliseconds, and `billfold worker`
    # re-executes itself on SIGHUP (os.execv, no exit handlers), which would drop a waiting batch.
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
