"""Hook specifications: the contract between Billfold and its plugins.

Hooks are called by keyword. An implementation may accept any subset of the arguments, so new
arguments never break old plugins. Hooks marked "may return an awaitable" can be ``async def``;
Billfold awaits what they return. See README "Writing a plugin" for an example of each hook.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("billfold")
hookimpl = pluggy.HookimplMarker("billfold")


@hookspec
def billfold_config_schema() -> Any:
    """Declare this plugin's config section.

    Return ``(name, StructType)``: the section ``plugins.<name>`` of billing.yaml is converted into
    ``StructType`` (a msgspec Struct) at start-up; an invalid section stops the server with the
    YAML key path and line. The converted value is available as ``app_state.plugin_config(name)``.
    """


@hookspec
def billfold_startup(state: Any) -> Any:
    """Called once when the application starts, after the config is validated and the database is
    reachable. ``state`` is the :class:`billfold.state.AppState`. May return an awaitable.
    Raise :class:`billfold.errors.StartupError` to refuse to start with a clear message."""


@hookspec
def billfold_routes(state: Any) -> Any:
    """Return a list of Litestar route handlers or controllers to mount on the app."""


@hookspec(firstresult=True)
def billfold_payment_provider(state: Any) -> Any:
    """Return the active :class:`billfold.payments.provider.PaymentProvider`, or None to pass.

    The first non-None answer wins; the built-in local provider answers last (``trylast``)."""


@hookspec
def billfold_authorize_debit(
    conn: Any, org_id: Any, amount_cents: int, kind: str, context: dict[str, Any], state: Any
) -> Any:
    """Decide whether a debit (charge or hold) may happen, before the balance is touched.

    Runs inside the writing transaction (``conn`` is the SQLAlchemy AsyncConnection). Refuse by
    raising :class:`billfold.errors.PaymentRequired` (HTTP 402) with a machine code; return None
    to allow. May return an awaitable."""


@hookspec
def billfold_ledger_entry_written(conn: Any, entry: Any, account: Any, state: Any) -> Any:
    """A ledger entry was written; called inside the same transaction, before commit.

    ``entry`` is a :class:`billfold.ledger.service.EntryRow`, ``account`` the
    :class:`billfold.ledger.service.AccountRow` after the change. Anything written through
    ``conn`` commits or rolls back with the entry, so a reaction can never be lost.
    May return an awaitable.

    Cost: while any plugin implements this hook, every debit on PostgreSQL runs as an explicit
    transaction (BEGIN, write, hooks, COMMIT) instead of one self-committing statement, and the
    account row stays locked while the hooks run. A plugin that only cares about low balances
    should use ``billfold_balance_watermarks`` + ``billfold_balance_below_watermark`` instead."""


@hookspec
def billfold_balance_watermarks(conn: Any, org_id: Any) -> Any:
    """Return the free-balance levels (minor units) this plugin wants to hear about, or None.

    The ledger stores the highest on the account (asked again whenever a plugin calls
    ``LedgerService.refresh_watermark``); a write that leaves the free balance below it flags
    ``account.below_watermark`` and calls ``billfold_balance_below_watermark``. May return an
    awaitable."""


@hookspec
def billfold_balance_below_watermark(conn: Any, entry: Any, account: Any, state: Any) -> Any:
    """A write took money out of the free balance and left it below the account's watermark.

    Called inside the writing transaction, before commit, with the same arguments as
    ``billfold_ledger_entry_written`` (check ``account.free_cents`` against your own levels: the
    watermark is the highest level any plugin watches). Debits that stay above the watermark
    never reach this hook, which keeps them on the single-statement path. May return an
    awaitable.

    Example (queue a reminder when the balance falls under 5 dollars)::

        @hookimpl
        def billfold_balance_watermarks(conn, org_id):
            return 500

        @hookimpl
        async def billfold_balance_below_watermark(conn, entry, account, state):
            if account.free_cents < 500:
                await emit(conn, "reminder.low_balance", {"free": account.free_cents},
                           org_id=account.org_id)
    """


@hookspec
def billfold_event_handlers(state: Any) -> Any:
    """Return ``{event_type: async handler(state, event)}`` for outbox events.

    Handlers run in the background worker after the writing transaction committed, at least
    once per event (make them idempotent); an exception retries the event later."""


@hookspec
def billfold_provider_webhook(state: Any, event: Any) -> Any:
    """A verified provider webhook event (:class:`billfold.payments.provider.ProviderEvent`) arrived.

    Called after Billfold applied it (payments credited, methods marked ready), once per event id.
    May return an awaitable."""


@hookspec
def billfold_organization_created(conn: Any, org: Any, config: Any) -> Any:
    """A new organization (``org``: :class:`billfold.orgs.service.OrgRow`) was created; called in
    the creating transaction, so per-organization rows a plugin keeps are created atomically.
    May return an awaitable."""
