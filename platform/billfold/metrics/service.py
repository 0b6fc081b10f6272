"""``GET /metrics``: Billfold's Prometheus metrics, in the text format of prometheus_client.

Counted as they happen, in the serving process:

- every HTTP request's duration by method, route template and status (a middleware);
- charges and usage events by outcome and error code, read from the route's answer by the same
  middleware (route template + status + the error's machine code), never in the ledger's write;
  a batch's events from the batch route's per-event results;
- ledger entries written, by kind (the ledger calls ``count_entry`` after each write);
- auto-reload outcomes, from the ``auto_reload.*`` domain events (``billfold_domain_event``).

Read from the database at each scrape (one cheap query each, on indexed columns): holds open, the
outbox's depth and the age of its oldest event, and the month close's progress for the last month.
Plugins add theirs through ``billfold_metrics``.

With ``billfold serve --workers N`` (N > 1) each worker writes its counts to the directory named by
``PROMETHEUS_MULTIPROC_DIR`` and whichever worker answers a scrape sums every worker's
(:class:`prometheus_client.multiprocess.MultiProcessCollector`); the values read from the database
are read once, by the worker that answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import inspect
import logging
import os
import threading
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import msgspec
from litestar import Request, Response, get
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

from billfold.api.auth import operator_guard
from billfold.clock import now
from billfold.db import table_of
from billfold.events.models import OutboxEvent
from billfold.hookspecs import hookimpl
from billfold.ledger.models import ENTRY_KINDS, Hold
from billfold.logs import ERROR_CODE
from billfold.metrics import USAGE_OUTCOMES
from billfold.metrics.multiprocess import MULTIPROC_ENV
from billfold.orgs.models import Organization
from billfold.usage.close import parse_period, previous_period
from billfold.usage.models import MonthClose

if TYPE_CHECKING:
    from litestar.config.app import AppConfig
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from billfold.api.app import Billfold
    from billfold.api.auth import OperatorAuth
    from billfold.config.schema import MetricsConfig
    from billfold.db import Database
    from billfold.events.outbox import DomainEvent

logger = logging.getLogger("billfold.metrics")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: a charge takes a few milliseconds, a month report or a PDF up to seconds."""
FLUSH_SECONDS = 1.0
"""How often a serving process adds what it counted to the metrics (a scrape adds its own first)."""

CHARGES, USAGE, USAGE_BATCH = "charges", "usage", "usage_batch"
COUNTED_ROUTES = {
    ("POST", "/v1/billing/charges"): CHARGES,
    ("POST", "/v1/usage"): USAGE,
    ("POST", "/v1/usage/batch"): USAGE_BATCH,
}
"""(method, route template) → what the route's answer counts."""

_REPLAYED = b"idempotent-replayed"
_holds = table_of(Hold)
_outbox = table_of(OutboxEvent)
_closes = table_of(MonthClose)
_organizations = table_of(Organization)

Reader = Callable[[], "Iterable[Metric] | Awaitable[Iterable[Metric]]"]
"""A source read at each scrape: returns metric families (sync or async)."""


def outcome_of(status: int, replayed: bool) -> str:
    """``accepted`` (2xx), ``replayed`` (the answer of an earlier request with the same
    Idempotency-Key or event_id), ``refused`` (4xx: 402 for money, caps or a blocked account; the
    code says which), ``failed`` (5xx)."""
    if status < 300:
        return "replayed" if replayed else "accepted"
    if status < 500:
        return "refused"
    return "failed"


class Metrics:
    """The metrics of one serving process, and what a scrape reads."""

    def __init__(self, config: MetricsConfig, *, db: Database, operator: OperatorAuth) -> None:
        self.config = config
        self.db = db
        self.operator = operator
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        """Set: several workers; a scrape sums the counts every worker wrote there."""
        self.registry = CollectorRegistry()
        registry = self.registry
        self.latency = Histogram(
            "billfold_http_request_duration_seconds",
            "HTTP requests by method, route template and status: how long each took to answer",
            ("method", "route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.charges = Counter(
            "billfold_charges",
            "POST /v1/billing/charges by outcome (accepted, replayed, refused, failed) and error code",
            ("outcome", "code"),
            registry=registry,
        )
        self.usage_events = Counter(
            "billfold_usage_events",
            "Usage events (POST /v1/usage and each event of a batch) by outcome and error code",
            ("outcome", "code"),
            registry=registry,
        )
        self.ledger_entries = Counter(
            "billfold_ledger_entries",
            "Ledger entries written by this server, by kind",
            ("kind",),
            registry=registry,
        )
        self.auto_reload = Counter(
            "billfold_auto_reload_events",
            "Auto-reload outcomes: the auto_reload.* domain events, by the part after the dot",
            ("outcome",),
            registry=registry,
        )
        # What the requests and writes counted since the last flush, in plain Python: cheaper per
        # request than a prometheus_client value (a lock each, and with several workers a write to
        # a memory-mapped file), added to the metrics every FLUSH_SECONDS and before a scrape.
        self._bounds = LATENCY_BUCKETS
        self._timed: dict[tuple[str, str, int], list[float]] = {}
        """(method, route, status) → a count per bucket (the last one +Inf), then the sum."""
        self._outcomes: dict[tuple[str, str, str], int] = {}
        self._entries: dict[str, int] = {}
        self._events: dict[str, int] = {}
        for kind in ENTRY_KINDS:  # every kind shows, 0 until written
            self.ledger_entries.labels(kind)
        self.readers: list[tuple[str, Reader]] = [
            ("holds", self.read_holds),
            ("outbox", self.read_outbox),
            ("month_close", self.read_month_close),
        ]
        self.collectors: list[tuple[str, Any]] = []
        """Plugins' collectors (``billfold_metrics``), by plugin name."""

    # -- counting -------------------------------------------------------------------------------------

    def observe(self, scope: dict[str, Any], start: dict[str, Any] | None, seconds: float) -> None:
        """One answered request (``start``: its ``http.response.start`` message)."""
        status: int = start["status"] if start is not None else 500
        method: str = scope["method"]
        route = scope.get("path_template") or "unmatched"
        key = (method, route, status)
        slot = self._timed.get(key)
        if slot is None:
            slot = self._timed[key] = [0.0] * (len(self._bounds) + 2)
        slot[bisect_left(self._bounds, seconds)] += 1
        slot[-1] += seconds
        counted = COUNTED_ROUTES.get((method, route))
        if counted is not None:
            self._count(counted, scope, status, start)

    def _count(self, counted: str, scope: dict[str, Any], status: int, start: dict[str, Any] | None) -> None:
        outcomes = self._outcomes
        if counted == USAGE_BATCH:
            for outcome, code in scope.get(USAGE_OUTCOMES) or ():
                key = (USAGE, outcome, code or "")
                outcomes[key] = outcomes.get(key, 0) + 1
            return
        replayed = False
        if status < 300 and start is not None:
            replayed = any(name.lower() == _REPLAYED for name, _ in start.get("headers", ()))
        code = (scope.get(ERROR_CODE) or "") if status >= 300 else ""
        key = (counted, outcome_of(status, replayed), code)
        outcomes[key] = outcomes.get(key, 0) + 1

    def count_entry(self, kind: str) -> None:
        """A ledger entry of ``kind`` was written."""
        self._entries[kind] = self._entries.get(kind, 0) + 1

    def count_event(self, event_type: str) -> None:
        """A domain event was emitted: ``auto_reload.*`` are counted by their outcome."""
        if event_type.startswith("auto_reload."):
            outcome = event_type[len("auto_reload.") :]
            self._events[outcome] = self._events.get(outcome, 0) + 1

    def flush(self) -> None:
        """Add what was counted since the last flush to the metrics."""
        timed, self._timed = self._timed, {}
        for (method, route, status), slot in timed.items():
            child = self.latency.labels(method, route, str(status))
            # a histogram takes one observation at a time: its buckets and sum take the batch
            for bucket, count in zip(child._buckets, slot, strict=False):
                if count:
                    bucket.inc(count)
            child._sum.inc(slot[-1])
        outcomes, self._outcomes = self._outcomes, {}
        for (counted, outcome, code), count in outcomes.items():
            counter = self.charges if counted == CHARGES else self.usage_events
            counter.labels(outcome, code).inc(count)
        entries, self._entries = self._entries, {}
        for kind, count in entries.items():
            self.ledger_entries.labels(kind).inc(count)
        events, self._events = self._events, {}
        for outcome, count in events.items():
            self.auto_reload.labels(outcome).inc(count)

    async def flush_every(self, seconds: float = FLUSH_SECONDS) -> None:
        """The serving process's flusher (several workers: a scrape sees the others' counts
        within this delay)."""
        while True:
            await asyncio.sleep(seconds)
            try:
                self.flush()
            except Exception:
                logger.exception("metrics flush failed")

    # -- what a scrape reads from the database ----------------------------------------------------------

    async def read_holds(self) -> list[Metric]:
        async with self.db.reading() as conn:
            open_holds = (
                await conn.execute(
                    select(func.count()).select_from(_holds).where(_holds.c.status == "pending")
                )
            ).scalar_one()
        return [
            GaugeMetricFamily(
                "billfold_holds_open",
                "Holds pending: neither captured, released nor expired",
                value=open_holds,
            )
        ]

    async def read_outbox(self) -> list[Metric]:
        async with self.db.reading() as conn:
            depth, oldest = (
                await conn.execute(
                    select(func.count(), func.min(_outbox.c.created_at)).where(
                        _outbox.c.processed_at.is_(None)
                    )
                )
            ).one()
        age = 0.0
        if oldest is not None:
            if isinstance(oldest, str):  # SQLite's MIN() returns the stored text
                oldest = datetime.datetime.fromisoformat(oldest)
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=datetime.UTC)
            age = max(0.0, (now() - oldest).total_seconds())
        return [
            GaugeMetricFamily(
                "billfold_outbox_pending", "Domain events not yet delivered to their handlers", value=depth
            ),
            GaugeMetricFamily(
                "billfold_outbox_oldest_age_seconds",
                "Age of the oldest undelivered domain event (business time; 0 when none)",
                value=age,
            ),
        ]

    async def read_month_close(self) -> list[Metric]:
        period = previous_period(now())
        _, end = parse_period(period)
        async with self.db.reading() as conn:
            closed = (
                await conn.execute(
                    select(func.count()).select_from(_closes).where(_closes.c.period == period)
                )
            ).scalar_one()
            due = (
                await conn.execute(
                    select(func.count()).select_from(_organizations).where(_organizations.c.created_at < end)
                )
            ).scalar_one()
        family = GaugeMetricFamily(
            "billfold_month_close_organizations",
            "The last month's close: organizations closed and still pending",
            labels=("period", "state"),
        )
        family.add_metric((period, "closed"), closed)
        family.add_metric((period, "pending"), max(0, due - closed))
        return [family]

    # -- a scrape -----------------------------------------------------------------------------------------

    async def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (Prometheus's text format, or OpenMetrics when ``accept`` asks for it)
        and its content type: the counts (this process's, or every worker's), then what the
        database and the plugins' sources answer now. A source that fails is left out and shows
        ``billfold_metrics_source_up{source} 0`` (its error is logged): a scrape never fails."""
        self.flush()
        families: list[Metric] = []
        up: dict[str, int] = {}
        for name, read in self.readers:
            try:
                answer = read()
                if inspect.isawaitable(answer):
                    answer = await answer
                families.extend(answer or ())
                up.setdefault(name, 1)
            except Exception:
                logger.exception("metrics source %s failed", name)
                up[name] = 0
        counts = (
            MultiProcessCollector(None, path=self.multiprocess_dir)
            if self.multiprocess_dir
            else self.registry
        )
        for name, collector in [("counts", counts), *self.collectors]:
            if self.multiprocess_dir and isinstance(collector, MetricWrapperBase):
                continue  # its counts are in the workers' files, summed above
            try:
                families.extend(collector.collect())
                up.setdefault(name, 1)
            except Exception:
                logger.exception("metrics collector %s failed", name)
                up[name] = 0
        sources = GaugeMetricFamily(
            "billfold_metrics_source_up",
            "1 when every part of the source answered this scrape, 0 when one failed (the log says why)",
            labels=("source",),
        )
        for name, answered in up.items():
            sources.add_metric((name,), answered)
        families.append(sources)
        encoder, content_type = choose_encoder(accept or "")
        return encoder(_Families(families)), content_type

    async def authorize(self, header: str | None) -> tuple[int, str, str] | None:
        """The metrics port's check of an operator key: None when allowed, else (status, code,
        message), the API's codes."""
        if not header:
            return 401, "missing_api_key", "missing Authorization header"
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "token") or not token:
            return 401, "invalid_authorization_header", "the Authorization header must be `Bearer <key>`"
        if await self.operator.identify(token) is not None:
            return None
        if not await self.operator.enabled():
            return 401, "admin_disabled", "operator routes are disabled"
        return 401, "invalid_admin_key", "invalid operator key"


class _Families:
    """A collector of metric families already read."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


# -- the middleware --------------------------------------------------------------------------------------


class MetricsMiddleware(ASGIMiddleware):
    """Times every HTTP request and counts the answers of the charge and usage routes."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, metrics: Metrics) -> None:
        self.observe = metrics.observe

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        start: Message | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            await send(message)

        try:
            await next_app(scope, receive, send_wrapper)
        finally:
            self.observe(scope, start, time.perf_counter() - started)  # type: ignore[arg-type]


# -- auto-reload outcomes ----------------------------------------------------------------------------------


class MetricsHooks:
    """The core's reaction to domain events for the metrics (registered while the app serves)."""

    BILLFOLD_CORE = True

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    @hookimpl
    def billfold_domain_event(self, event: DomainEvent) -> None:
        self.metrics.count_event(event.type)


# -- the metrics port ---------------------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per scrape on stderr."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class MetricsPort:
    """``metrics.port``: /metrics on its own port, answered from a thread that asks the serving
    event loop for the scrape. With several workers, one binds the port and answers for all (the
    counts are summed from the shared directory)."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: _ThreadingServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> bool:
        """Bind and serve; False when another worker of this server already does."""
        self.loop = asyncio.get_running_loop()
        try:
            server = make_server(
                self.host, self.port, self.wsgi, server_class=_ThreadingServer, handler_class=_QuietHandler
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and self.metrics.multiprocess_dir:
                logger.debug("metrics port %s is served by another worker", self.port)
                return False
            raise
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, name="billfold-metrics", daemon=True)
        self.thread.start()
        logger.info("metrics on http://%s:%s/metrics", self.host, self.port)
        return True

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def _run(self, coroutine: Awaitable[Any], timeout: float) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)  # type: ignore[arg-type]

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        def answer(status: str, body: bytes, content_type: str) -> list[bytes]:
            start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
            return [body]

        def error(status: int, code: str, message: str) -> list[bytes]:
            body = msgspec.json.encode({"code": code, "message": message})
            phrase = {401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "Error")
            return answer(f"{status} {phrase}", body, "application/json")

        if environ.get("PATH_INFO") != "/metrics":
            return error(404, "not_found", "only /metrics is served on this port")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return error(405, "method_not_allowed", "GET /metrics")
        try:
            if self.metrics.config.require_operator_key:
                refused = self._run(self.metrics.authorize(environ.get("HTTP_AUTHORIZATION")), 10)
                if refused is not None:
                    return error(*refused)
            body, content_type = self._run(self.metrics.render(environ.get("HTTP_ACCEPT")), 30)
        except Exception:
            logger.exception("metrics scrape failed")
            return answer("503 Service Unavailable", b"metrics unavailable\n", "text/plain")
        return answer("200 OK", body, content_type)


# -- wiring ----------------------------------------------------------------------------------------------


def plugin_sources(billfold: Billfold) -> Iterator[tuple[str, Any]]:
    """``(plugin name, collector or reader)`` for each answer of ``billfold_metrics``."""
    for impl in billfold.pm.hook.billfold_metrics.get_hookimpls():
        kwargs = {"state": billfold.hook_state}
        answer = impl.function(*(kwargs[name] for name in impl.argnames))
        items = answer if isinstance(answer, list | tuple) else [answer]
        for item in items:
            if item is not None:
                yield impl.plugin_name, item


def install(billfold: Billfold, app_config: AppConfig) -> Metrics:
    """Count this app's requests, entries and events, and serve /metrics (on the API's port or on
    ``metrics.port``)."""
    config = billfold.config.metrics
    metrics = Metrics(config, db=billfold.db, operator=billfold.operator)
    billfold.ledger.count_entry = metrics.count_entry
    name = "billfold.metrics"
    previous = billfold.pm.get_plugin(name)
    if previous is not None:
        billfold.pm.unregister(previous)
    billfold.pm.register(MetricsHooks(metrics), name=name)
    for plugin, source in plugin_sources(billfold):
        if hasattr(source, "collect"):
            metrics.collectors.append((plugin, source))
        elif callable(source):
            metrics.readers.append((plugin, source))
        else:
            raise TypeError(
                f"billfold_metrics of {plugin}: expected a collector or a callable, got {source!r}"
            )
    # Outermost: the time covers every other middleware, and every answer is seen.
    app_config.middleware.insert(0, MetricsMiddleware(metrics))
    port = None
    if config.port is None:
        app_config.route_handlers.append(metrics_route(metrics))
    else:
        port = MetricsPort(metrics, config.host or billfold.config.server.host, config.port)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        flusher = asyncio.create_task(metrics.flush_every(), name="billfold-metrics-flush")
        if port is not None:
            port.start()
        try:
            yield
        finally:
            if port is not None:
                port.stop()
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            metrics.flush()

    app_config.lifespan.append(lifespan)
    return metrics


def metrics_route(metrics: Metrics) -> Any:
    """GET /metrics on the API's port (behind the operator key unless
    ``metrics.require_operator_key: false``). Not in the OpenAPI document: it answers Prometheus's
    text format, not JSON."""

    @get(
        "/metrics",
        guards=[operator_guard] if metrics.config.require_operator_key else None,
        include_in_schema=False,
    )
    async def scrape(request: Request[Any, Any, Any]) -> Response[bytes]:
        body, content_type = await metrics.render(request.headers.get("accept"))
        # the content type as the library writes it (Litestar would add a second charset)
        return Response(body, media_type=content_type, headers={"content-type": content_type})

    return scrape
