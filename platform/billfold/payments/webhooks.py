"""Provider webhooks: each verified event is applied once, in one transaction.

An event the platform cannot apply (its metadata names no organization Billfold knows) is
recorded with its outcome, logged and acknowledged: the provider stops retrying it, and the
operator finds it in ``provider_events``.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.db import Database, dialect_insert, table_of
from billfold.errors import NotFound
from billfold.events.outbox import emit
from billfold.ledger.service import LedgerService
from billfold.payments.credits import CreditService
from billfold.payments.methods import MethodService
from billfold.payments.models import ProviderEvent as ProviderEventRecord
from billfold.payments.provider import ProviderEvent
from billfold.plugins import Hooks

logger = logging.getLogger("billfold.payments")

provider_events = table_of(ProviderEventRecord)

CREDITING_EVENTS = (
    "payment_intent.succeeded",
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
)
PLAN_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
FAILING_EVENTS = ("payment_intent.payment_failed", "checkout.session.async_payment_failed")


class WebhookService:
    def __init__(
        self,
        db: Database,
        *,
        ledger: LedgerService,
        credits: CreditService,
        methods: MethodService,
        hooks: Hooks,
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.credits = credits
        self.methods = methods
        self.hooks = hooks

    async def handle(self, event: ProviderEvent) -> bool:
        """Apply a verified provider event once. Returns False for a duplicate delivery."""
        saved = None
        if event.type == "setup_intent.succeeded" and event.setup_intent is not None:
            saved = await self.methods.describe(event.setup_intent.payment_method_id)
        async with self.db.transaction() as conn:
            fresh = (
                await conn.execute(
                    dialect_insert(conn)(provider_events)
                    .values(provider=event.provider, event_id=event.id, type=event.type, outcome="applied")
                    .on_conflict_do_nothing(
                        index_elements=[provider_events.c.provider, provider_events.c.event_id]
                    )
                    .returning(provider_events.c.event_id)
                )
            ).first()
            if fresh is None:
                return False
            outcome = await self._apply(conn, event, saved)
            if outcome != "applied":
                await conn.execute(
                    update(provider_events)
                    .where(
                        provider_events.c.provider == event.provider, provider_events.c.event_id == event.id
                    )
                    .values(outcome=outcome)
                )
        await self.hooks.call("billfold_provider_webhook", event=event)
        return True

    async def _org(
        self, conn: AsyncConnection, metadata: dict[str, str], event: ProviderEvent
    ) -> uuid.UUID | None:
        named = metadata.get("org_id")
        try:
            org_id = uuid.UUID(named) if named else None
            if org_id is not None:
                await self.ledger.account(org_id, conn=conn)
        except (ValueError, NotFound):
            logger.warning(
                "provider event %s (%s) names organization %r, which does not exist: "
                "acknowledged, not applied",
                event.id,
                event.type,
                named,
            )
            return None
        return org_id

    async def _apply(self, conn: AsyncConnection, event: ProviderEvent, saved: object) -> str:
        intent = event.intent
        if event.type in CREDITING_EVENTS and intent is not None:
            org_id = await self._org(conn, intent.metadata, event)
            if org_id is None:
                return "unknown_organization" if intent.metadata.get("org_id") else "ignored"
            # A checkout session paid by a delayed method (SEPA) completes unpaid (`processing`);
            # it is credited by its later async_payment_succeeded event.
            if intent.status == "succeeded":
                purpose = intent.metadata.get("purpose", "checkout")
                await self.credits.credit(conn, event.provider, intent, purpose=purpose, org_id=org_id)
            return "applied"
        if event.type in FAILING_EVENTS and intent is not None:
            org_id = await self._org(conn, intent.metadata, event)
            if org_id is None:
                return "unknown_organization" if intent.metadata.get("org_id") else "ignored"
            purpose = intent.metadata.get("purpose", "top_up")
            await self.credits.failed(conn, org_id, event.provider, intent, purpose=purpose)
            return "applied"
        if event.type in PLAN_EVENTS and event.data.get("metadata", {}).get("plan_steps"):
            # A checkout for plan steps (document 003's POST /billing) was paid: the plan changes in
            # this transaction (the usage domain reacts to the domain event).
            metadata = {str(k): str(v) for k, v in event.data.get("metadata", {}).items()}
            if event.data.get("payment_status") not in ("paid", "no_payment_required"):
                return "ignored"
            org_id = await self._org(conn, metadata, event)
            if org_id is None:
                return "unknown_organization" if metadata.get("org_id") else "ignored"
            steps = [step for step in metadata["plan_steps"].split(",") if step]
            await emit(
                conn, "plan.steps_paid", {"steps": steps, "session_id": event.session_id}, org_id=org_id
            )
            return "applied"
        if event.type in PLAN_EVENTS and event.data.get("metadata", {}).get("plan_steps"):
            # A checkout for plan steps (document 003's POST /billing) was paid: the plan changes in
            # this transaction (the usage domain reacts to the domain event).
            metadata = {str(k): str(v) for k, v in event.data.get("metadata", {}).items()}
            if event.data.get("payment_status") not in ("paid", "no_payment_required"):
                return "ignored"
            org_id = await self._org(conn, metadata, event)
            if org_id is None:
                return "unknown_organization" if metadata.get("org_id") else "ignored"
            steps = [step for step in metadata["plan_steps"].split(",") if step]
            await emit(
                conn, "plan.steps_paid", {"steps": steps, "session_id": event.session_id}, org_id=org_id
            )
            return "applied"
        if event.type == "setup_intent.succeeded" and event.setup_intent is not None:
            setup = event.setup_intent
            org_id = await self._org(conn, setup.metadata, event)
            if org_id is None:
                return "unknown_organization" if setup.metadata.get("org_id") else "ignored"
            if saved is not None and setup.payment_method_id:
                from billfold.payments.provider import Method

                assert isinstance(saved, Method)
                await self.methods.saved_in_browser(conn, org_id, saved)
            return "applied"
        return "ignored"
