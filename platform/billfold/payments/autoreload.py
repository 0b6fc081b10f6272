"""Auto-reload: when a write takes the free balance below the organization's minimum, charge its
saved method off-session, under a monthly limit, pausing after repeated failures.

It is a plugin of the core, registered by the composition root: it watches the minimum as a
balance level (``billfold_balance_levels``), claims a reload when a write crosses it
(``billfold_balance_crossed``, inside the debit's transaction — the debit never waits on the
provider), charges in the worker after commit (``billfold_event_handlers``), and learns the outcome
from the payment events (``billfold_domain_event``, inside the crediting transaction).
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.clock import now
from billfold.config import AutoReloadDefaults
from billfold.db import Database
from billfold.events.outbox import DomainEvent, Handler, emit
from billfold.hookspecs import Direction, WorkerTask, hookimpl
from billfold.ledger.rows import AccountRow, EntryRow
from billfold.ledger.service import LedgerService
from billfold.payments.credits import CreditService
from billfold.payments.profiles import AutoReloadChange, FieldNames, ProfileRow, ProfileService, Settings
from billfold.payments.provider import CardDeclined, Intent, PaymentProvider

logger = logging.getLogger("billfold.payments")

PURPOSE = "auto_reload"


class BillingView(msgspec.Struct, frozen=True):
    account: AccountRow
    profile: ProfileRow


ATTEMPT_STATUSES = (
    "succeeded",
    "processing",
    "requires_action",
    "requires_payment_method",
    "requires_confirmation",
    "canceled",
)
"""Every outcome of a reload attempt that reached the provider: what counts toward the daily cap."""


def month_start(moment: Any) -> Any:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def day_start(moment: Any) -> Any:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


class AutoReloadService:
    BILLFOLD_CORE = True

    def __init__(
        self,
        db: Database,
        *,
        ledger: LedgerService,
        profiles: ProfileService,
        credits: CreditService,
        provider: Callable[[], PaymentProvider],
        defaults: AutoReloadDefaults,
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.profiles = profiles
        self.credits = credits
        self._provider = provider
        self.defaults = defaults

    # -- the tenant's settings ------------------------------------------------------------------------

    async def view(self, org_id: uuid.UUID, *, conn: AsyncConnection | None = None) -> BillingView:
        async with self.db.reading(conn) as c:
            return BillingView(
                account=await self.ledger.account(org_id, conn=c),
                profile=await self.profiles.get(org_id, conn=c),
            )

    async def configure(
        self, org_id: uuid.UUID, change: AutoReloadChange, names: FieldNames, settings: Settings | None = None
    ) -> BillingView:
        """Change the settings; the account learns the new minimum, and enabling it while the
        balance is already below starts a reload at once."""
        async with self.db.transaction() as conn:
            await self.ledger.lock(conn, org_id)
            profile = await self.profiles.change_settings(conn, org_id, change, names, settings)
            await self.ledger.refresh_levels(org_id, conn=conn)
            view = await self.view(org_id, conn=conn)
            if change.enabled is True and view.account.free_cents < profile.auto_reload_minimum_cents:
                await self.request(conn, org_id, view.account.free_cents)
        return view

    # -- hooks ------------------------------------------------------------------------------------

    @hookimpl
    async def billfold_balance_levels(self, conn: AsyncConnection, org_id: uuid.UUID) -> list[int] | None:
        """The minimum while auto-reload is on and not paused; after a failed reload also the
        balance it failed at, so that the next debit below tries again."""
        profile = await self.profiles.get(org_id, conn=conn)
        if not profile.auto_reload_enabled or profile.reload_paused:
            return None
        levels = [profile.auto_reload_minimum_cents]
        if (
            profile.reload_rearm_cents is not None
            and profile.reload_rearm_cents < profile.auto_reload_minimum_cents
        ):
            levels.append(profile.reload_rearm_cents)
        return levels

    @hookimpl
    async def billfold_balance_crossed(
        self, conn: AsyncConnection, entry: EntryRow, account: AccountRow, direction: Direction
    ) -> None:
        if direction == "down":
            await self.request(conn, account.org_id, account.free_cents)

    @hookimpl
    async def billfold_domain_event(self, conn: AsyncConnection, event: DomainEvent) -> None:
        """The outcome of a reload's payment, in the transaction that recorded it."""
        if event.payload.get("purpose") != PURPOSE or event.org_id is None:
            return
        if event.type == "payment.succeeded":
            await self.profiles.reload_succeeded(conn, event.org_id)
            await emit(
                conn,
                "auto_reload.succeeded",
                {
                    "payment_intent_id": event.payload.get("payment_intent_id"),
                    "amount_cents": event.payload.get("amount_cents"),
                    "currency": event.payload.get("currency"),
                },
                org_id=event.org_id,
            )
        elif event.type in ("payment.failed", "payment.requires_action"):
            await self._failed(
                conn, event.org_id, event.payload, needs_auth=event.type == "payment.requires_action"
            )

    @hookimpl
    def billfold_event_handlers(self) -> dict[str, Handler]:
        return {"auto_reload.requested": self.run}

    @hookimpl
    def billfold_worker_tasks(self) -> list[WorkerTask]:
        return [WorkerTask(name="auto-reload-retries", interval_seconds=30, run=self.retry_due)]

    async def retry_due(self) -> int:
        """Try once more the declined reloads whose retry is due (business time). Returns how many
        were requested; a balance back at its minimum in the meantime needs none."""
        requested = 0
        async with self.db.reading() as conn:
            due = await self.profiles.due_retries(conn, now())
        for org_id in due:
            async with self.db.transaction() as conn:
                account = await self.ledger.lock(conn, org_id)
                await self.profiles.retry_started(conn, org_id)
                if await self.request(conn, org_id, account.free_cents):
                    requested += 1
        return requested

    # -- the engine -------------------------------------------------------------------------------

    async def request(self, conn: AsyncConnection, org_id: uuid.UUID, free_cents: int) -> bool:
        """Claim the organization's single in-flight reload and queue the off-session charge."""
        claimed = await self.profiles.claim_reload(conn, org_id, free_cents)
        if claimed is None:
            return False
        amount, limit = claimed
        moment = now()
        _, today = await self.credits.spent_since(
            conn, org_id, PURPOSE, day_start(moment), statuses=ATTEMPT_STATUSES
        )
        if today >= self.defaults.max_per_day:
            await self.profiles.reload_done(conn, org_id)
            await emit(
                conn,
                "auto_reload.limit_reached",
                {"period": "day", "max_per_day": self.defaults.max_per_day, "reloads_today": today},
                org_id=org_id,
            )
            return False
        if limit is not None:
            spent, _ = await self.credits.spent_since(conn, org_id, PURPOSE, month_start(moment))
            if spent + amount > limit:
                await self.profiles.reload_done(conn, org_id)
                await emit(
                    conn,
                    "auto_reload.limit_reached",
                    {
                        "period": "month",
                        "monthly_limit_cents": limit,
                        "spent_cents": spent,
                        "amount_cents": amount,
                    },
                    org_id=org_id,
                )
                return False
        await emit(
            conn, "auto_reload.requested", {"amount_cents": amount, "free_cents": free_cents}, org_id=org_id
        )
        return True

    async def run(self, event: DomainEvent) -> None:
        """Worker side: the off-session charge for a queued reload (at-least-once safe: the
        provider idempotency key is the outbox event id)."""
        org_id = event.org_id
        if org_id is None:
            return
        amount_cents = int(event.payload["amount_cents"])
        view = await self.view(org_id)
        profile = view.profile
        if not profile.reload_in_flight:
            return
        provider = self._provider()
        if (
            not profile.auto_reload_enabled
            or profile.default_payment_method_id is None
            or profile.customer_id is None
        ):
            async with self.db.transaction() as conn:
                await self.profiles.reload_done(conn, org_id)
            return
        metadata = {"org_id": str(org_id), "purpose": PURPOSE}
        try:
            intent: Intent = await provider.create_payment(
                customer_id=profile.customer_id,
                amount_cents=amount_cents,
                currency=view.account.currency,
                payment_method_id=profile.default_payment_method_id,
                off_session=True,
                idempotency_key=f"auto_reload:{org_id}:{event.id}",
                metadata=metadata,
            )
        except CardDeclined as exc:
            failed = exc.intent or Intent(
                id=f"failed_reload_{event.id}",
                status="requires_payment_method",
                amount_cents=amount_cents,
                currency=view.account.currency,
                metadata=metadata,
            )
            failed = msgspec.structs.replace(
                failed, failure_code=exc.provider_code or exc.code, failure_message=exc.message
            )
            async with self.db.transaction() as conn:
                await self.credits.failed(conn, org_id, provider.name, failed, purpose=PURPOSE)
            return
        # ProviderUnavailable propagates: the worker retries the event later, in_flight stays set.
        async with self.db.transaction() as conn:
            if intent.status == "succeeded":
                await self.credits.credit(conn, provider.name, intent, purpose=PURPOSE, org_id=org_id)
            else:
                await self.credits.record(conn, org_id, provider.name, intent, purpose=PURPOSE)

    async def _failed(
        self, conn: AsyncConnection, org_id: uuid.UUID, payload: dict[str, Any], *, needs_auth: bool
    ) -> None:
        account = await self.ledger.lock(conn, org_id)
        profile = await self.profiles.get(org_id, conn=conn)
        failures = profile.reload_failures + 1
        paused = failures >= self.defaults.max_consecutive_failures
        action = {
            "type": "authentication_required" if needs_auth else "payment_method_declined",
            "next_action": "confirm_payment" if needs_auth else "update_payment_method",
            "payment_intent_id": payload.get("payment_intent_id"),
            "client_secret": payload.get("client_secret") if needs_auth else None,
            "amount_cents": payload.get("amount_cents"),
            "failure_code": payload.get("failure_code")
            or ("authentication_required" if needs_auth else "card_declined"),
            "message": (
                "Confirm the payment with Stripe.js using client_secret."
                if needs_auth
                else "The card was declined: add another payment method and make it the default."
            ),
            "occurred_at": now().isoformat(),
        }
        # A decline is tried once more after retry_after_hours (document 004); when that retry
        # fails too, the tenant is told. (3-D Secure waits for the tenant instead.)
        retry_at = None
        if not needs_auth and not paused and not profile.reload_retried:
            retry_at = now() + datetime.timedelta(hours=self.defaults.retry_after_hours)
        await self.profiles.reload_failed(
            conn,
            org_id,
            failures=failures,
            paused=paused,
            action=action,
            rearm_cents=None if paused else account.free_cents,
            retry_at=retry_at,
        )
        await self.ledger.refresh_levels(org_id, conn=conn)
        await emit(conn, "auto_reload.failed", {**action, "consecutive_failures": failures}, org_id=org_id)
        if retry_at is not None:
            await emit(conn, "auto_reload.retry_scheduled", {"retry_at": retry_at.isoformat()}, org_id=org_id)
        elif profile.reload_retried and not needs_auth:
            await emit(
                conn,
                "auto_reload.retry_failed",
                {
                    **action,
                    "message": "The reload was declined again after a retry: update the payment method.",
                },
                org_id=org_id,
            )
        if needs_auth:
            await emit(conn, "auto_reload.requires_action", action, org_id=org_id)
        if paused:
            await emit(conn, "auto_reload.paused", {"consecutive_failures": failures}, org_id=org_id)
