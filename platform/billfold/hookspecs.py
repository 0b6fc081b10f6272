"""Hook specifications: the contract between Billfold and its plugins.

Hooks are called by keyword. An implementation may accept any subset of the arguments, so new
arguments never break old plugins. Every hook receives ``state`` (:class:`PluginState`), a
read-only view of the running Billfold: its config, the plugin's own section and the services a
plugin may call. An implementation may be ``async def``; Billfold awaits what it returns.

Hooks that take ``conn`` run inside the writing transaction: what a plugin writes through that
connection commits or rolls back with the change that called it, so a reaction is never lost and
never outlives a rolled-back write. The README's "Writing a plugin" has a section per hook, with
an example; a test fails when one is missing.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec
import pluggy

if TYPE_CHECKING:
    import click
    from sqlalchemy.ext.asyncio import AsyncConnection

    from billfold.config import BillfoldConfig
    from billfold.dashboard.panels import DashboardPanel
    from billfold.db import Database
    from billfold.events.outbox import DomainEvent
    from billfold.ledger.holds import HoldService
    from billfold.ledger.rows import AccountRow, EntryRow
    from billfold.ledger.service import LedgerService
    from billfold.orgs.service import OrgRow, OrgService
    from billfold.payments.provider import PaymentProvider, ProviderEvent

hookspec = pluggy.HookspecMarker("billfold")
hookimpl = pluggy.HookimplMarker("billfold")

Direction = Literal["down", "up"]
"""Which way a write moved the free balance across a watched level."""


class PriceQuote(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``billfold_price_usage``: the price of one billed unit, in minor units.

    ``unit_price`` may be fractional (``Decimal("0.79")`` cents); Billfold carries the fraction
    per organization, channel and currency so that N units always cost round(N * price).
    ``tier`` is what a tenant sees of the tier that priced it: ``{channel, current, volume_used}``.
    """

    unit_price: Decimal
    tier: dict[str, Any] | None = None


class UsageItem(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a batch to price (``billfold_price_usage_batch``): ``quantity`` in billed units."""

    channel: str
    message_type: str | None
    quantity: int


class WorkerTask(msgspec.Struct, frozen=True, kw_only=True):
    """A periodic job a plugin runs in the background worker (``billfold_worker_tasks``).

    ``run`` is called every ``interval_seconds`` (real time), concurrently with the worker's other
    tasks; an exception is logged and the task runs again at its next interval."""

    name: str
    interval_seconds: float
    run: Callable[[], Awaitable[object]]


class PluginState(Protocol):
    """What every hook receives as ``state``: a read-only view of the running Billfold."""

    @property
    def config(self) -> BillfoldConfig:
        """The validated billing.yaml (immutable)."""
        ...

    def plugin_config(self, name: str) -> Any:
        """The validated ``plugins.<name>`` section: the plugin's own Struct."""
        ...

    def plugin_enabled(self, name: str) -> bool:
        """False when ``plugins.<name>.enabled`` is false."""
        ...

    @property
    def db(self) -> Database:
        """Connections and transactions on Billfold's database (``db.transaction()``)."""
        ...

    @property
    def ledger(self) -> LedgerService:
        """Balances and entries: the only writer of money."""
        ...

    @property
    def holds(self) -> HoldService:
        """Holds: reserve, capture, release."""
        ...

    @property
    def orgs(self) -> OrgService:
        """Organizations."""
        ...

    @property
    def provider(self) -> PaymentProvider:
        """The active payment provider."""
        ...

    def wake_worker(self) -> None:
        """Ask the in-process worker for a round now (after a commit that queued work)."""
        ...


class MigrationSource(msgspec.Struct, frozen=True, kw_only=True):
    """A distribution's Alembic scripts (``billfold_migrations``): its own branch and version table."""

    name: str
    """The branch label and the suffix of its version table (``alembic_version_<name>``)."""
    script_location: Path


@hookspec
def billfold_config_schema() -> tuple[str, type[Any]] | None:
    """Declare this plugin's config section: return ``(name, StructType)``.

    The section ``plugins.<name>`` of billing.yaml is converted into ``StructType`` (a msgspec
    Struct) at start-up; an invalid section stops the server with the key path and line. Every
    section accepts ``enabled: false`` (declare ``enabled: bool = True`` on the Struct to read it).
    """


@hookspec
def billfold_startup(state: PluginState) -> Awaitable[None] | None:
    """Called once when the application starts, after the config is validated and the database is
    reachable. Raise :class:`billfold.StartupError` to refuse to start with a clear message."""


@hookspec
def billfold_routes(state: PluginState) -> Sequence[Any] | None:
    """Return Litestar route handlers or controllers to mount on the app.

    Guard operator routes with :func:`billfold.operator_guard`; a tenant route declares the
    dependency ``org: NamedDependency[billfold.OrgScope]`` to get the key's organization (a path
    parameter ``org_id`` is checked against it: another organization is 403)."""


@hookspec(firstresult=True)
def billfold_payment_provider(state: PluginState) -> PaymentProvider | None:
    """Return the active :class:`billfold.PaymentProvider`, or None to pass.

    The first non-None answer wins; the built-in local provider answers last (``trylast``)."""


@hookspec
def billfold_authorize_debit(
    conn: AsyncConnection,
    org_id: uuid.UUID,
    amount_cents: int,
    kind: str,
    context: dict[str, Any],
    state: PluginState,
) -> Awaitable[None] | None:
    """Decide whether a debit (``kind`` "debit" or "hold") may happen, before the balance moves.

    Runs inside the writing transaction. Refuse by raising :class:`billfold.PaymentRequired`
    (HTTP 402) with a machine code; return None to allow. While any plugin implements this hook,
    every charge runs as an explicit transaction (see the README on the single-statement path)."""


@hookspec
def billfold_ledger_entry_written(
    conn: AsyncConnection, entry: EntryRow, account: AccountRow, state: PluginState
) -> Awaitable[None] | None:
    """A ledger entry was written; called inside the same transaction, before commit.

    ``account`` is the account after the change. Cost: while any plugin implements this hook,
    every charge on PostgreSQL runs as an explicit transaction instead of one self-committing
    statement, and the account row stays locked while the hooks run. A plugin that cares about
    balance levels should use ``billfold_balance_levels`` + ``billfold_balance_crossed``."""


@hookspec
def billfold_balance_levels(
    conn: AsyncConnection, org_id: uuid.UUID, state: PluginState
) -> int | Sequence[int] | None:
    """Return the free-balance levels (minor units) this plugin watches for an organization.

    The account keeps the union of every plugin's levels, refreshed when an organization is
    created, when a plugin calls ``state.ledger.refresh_levels(org_id)``, and by
    ``billfold ledger refresh-levels``."""


@hookspec
def billfold_balance_crossed(
    conn: AsyncConnection,
    entry: EntryRow,
    account: AccountRow,
    levels: list[int],
    direction: Direction,
    state: PluginState,
) -> Awaitable[None] | None:
    """A write moved the free balance across one or more watched ``levels``.

    ``direction`` "down": before ≥ level > after (a debit, refund, hold, negative adjustment);
    "up": before < level ≤ after (a credit, release, positive adjustment). Called inside the
    writing transaction, before commit. Writes that cross no level never call it, which keeps
    charges on the single-statement path."""


@hookspec
def billfold_domain_event(
    conn: AsyncConnection, event: DomainEvent, state: PluginState
) -> Awaitable[None] | None:
    """A domain event was emitted (``billfold.emit``): called inside the writing transaction.

    Every event is also written to the outbox and delivered after commit to the handlers of
    ``billfold_event_handlers``; this hook is for reactions that must commit with the change
    (queue a webhook delivery, update a counter)."""


@hookspec(firstresult=True)
def billfold_price_usage(
    conn: AsyncConnection,
    org_id: uuid.UUID,
    channel: str,
    message_type: str | None,
    quantity: int,
    currency: str,
    at: datetime.datetime,
    state: PluginState,
) -> PriceQuote | Awaitable[PriceQuote | None] | None:
    """Price ``quantity`` billed units of a usage event; the first non-None answer wins.

    Called inside the usage write's transaction (lock what must be counted exactly there). The
    core's flat price from ``channels.<name>.price`` answers last (``trylast``)."""


@hookspec
def billfold_price_usage_batch(
    conn: AsyncConnection,
    org_id: uuid.UUID,
    items: list[UsageItem],
    currency: str,
    at: datetime.datetime,
    state: PluginState,
) -> list[PriceQuote | None] | Awaitable[list[PriceQuote | None] | None] | None:
    """Price the events of a ``POST /v1/usage/batch`` at once, in order, exactly as
    ``billfold_price_usage`` would price them one after another: a list as long as ``items``
    (a quote, or None for an item that is not yours), or None to pass on the whole batch, leaving
    nothing changed. Each item takes the first non-None quote, in hook order.

    Billfold asks it only while every plugin that implements ``billfold_price_usage`` implements
    this too (else it asks ``billfold_price_usage`` once per event), and when one implementation
    passes it prices the batch one event at a time instead. If an event is then refused after it
    was priced (a cap, the balance), the transaction is rolled back and the batch runs again one
    event at a time: what the answer counted is undone with it."""


@hookspec(firstresult=True)
def billfold_usage_tier(
    conn: AsyncConnection, org_id: uuid.UUID, channel: str, month: str, state: PluginState
) -> dict[str, Any] | Awaitable[dict[str, Any] | None] | None:
    """The tier progress shown beside a channel in a month's usage report (document 004's
    ``GET /v1/billing/usage``, ``month`` "YYYY-MM"): the first non-None answer, or ``null``."""


@hookspec
def billfold_month_close(
    conn: AsyncConnection, org_id: uuid.UUID, period: str, state: PluginState
) -> Awaitable[None] | None:
    """A UTC calendar month (``period`` "YYYY-MM") closes for an organization.

    Called once per organization and month, inside the month close's transaction, before the
    invoice is cut."""


@hookspec
def billfold_event_handlers(
    state: PluginState,
) -> dict[str, Callable[[DomainEvent], Awaitable[None]]] | None:
    """Return ``{event_type: async handler(event)}`` for outbox events.

    Handlers run in the background worker after the writing transaction committed, at least
    once per event (make them idempotent). An exception retries the event with backoff; raise
    :class:`billfold.RetryLater` to choose the delay."""


@hookspec
def billfold_worker_tasks(state: PluginState) -> Sequence[WorkerTask] | None:
    """Return periodic background jobs (:class:`billfold.WorkerTask`) to run in the worker."""


@hookspec
def billfold_provider_webhook(event: ProviderEvent, state: PluginState) -> Awaitable[None] | None:
    """A verified provider webhook event arrived and was applied (once per event id)."""


@hookspec
def billfold_organization_created(
    conn: AsyncConnection, org: OrgRow, state: PluginState
) -> Awaitable[None] | None:
    """A new organization was created; called in the creating transaction, so the rows a plugin
    keeps per organization are created atomically with it."""


@hookspec
def billfold_register_commands(cli: click.Group, state: PluginState) -> None:
    """Add commands to the ``billfold`` command line (``@cli.command()``).

    ``state`` is built on first use, so ``--help`` never opens the database; run async code
    with ``billfold.run_command(coroutine)``."""


@hookspec
def billfold_migrations(state: PluginState) -> MigrationSource | None:
    """Return this distribution's Alembic scripts (:class:`billfold.MigrationSource`).

    ``billfold db upgrade`` applies the core's, then each enabled plugin's, each in its own
    version table: a plugin disabled or uninstalled later never makes an upgrade fail."""


@hookspec
def billfold_dashboard_panels(
    org_id: uuid.UUID, state: PluginState
) -> Sequence[DashboardPanel] | Awaitable[Sequence[DashboardPanel] | None] | None:
    """Return panels (:class:`billfold.DashboardPanel`) for an organization's dashboard page.

    Called on every view of the page (read what the panel shows here, with ``state.db``). A
    panel is a title and an HTML fragment or a Jinja template, with optional actions
    (:class:`billfold.DashboardAction`): the dashboard draws their forms with the CSRF token, a
    required reason and a confirmation step, checks the operator's session, and calls the
    action's ``run`` inside a transaction that also writes the action's one audit row."""


MetricsSource = Any
"""What ``billfold_metrics`` returns: a prometheus_client collector (a Counter, Histogram, Gauge or
any object with ``collect()``), a callable run at each scrape that returns metric families (it may
be ``async def``), or a list of these."""


@hookspec
def billfold_metrics(state: PluginState) -> MetricsSource | Sequence[MetricsSource] | None:
    """Add the plugin's Prometheus metrics to ``GET /metrics``. Called once when the app is built.

    Return collectors and scrape-time callables (see :data:`MetricsSource`). Count events with a
    prometheus_client ``Counter`` or ``Histogram`` made once per process (at module level, with
    ``registry=None``) and returned here; read a current value (rows in a state, a queue's depth)
    in a callable that queries ``state.db`` and returns ``GaugeMetricFamily`` objects, computed at
    scrape time. With ``billfold serve --workers N`` (N > 1) the Counters and Histograms of every
    worker are summed (prometheus_client's multiprocess mode); a callable runs once, in the worker
    that answers. A source that raises is left out of that scrape (the log says why)."""
