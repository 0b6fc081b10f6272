"""Import every model so metadata (and Alembic autogenerate) sees all tables."""

from __future__ import annotations

from billfold.audit.models import AuditEvent, OperatorKey
from billfold.clock import ClockSetting
from billfold.events.models import OutboxEvent
from billfold.invoices.models import BillingDetails, Invoice, InvoiceCounter, InvoiceDocument, InvoiceLine
from billfold.ledger.models import Account, Entry, Hold, IdempotencyRecord
from billfold.orgs.models import ApiKey, Organization
from billfold.payments.models import BillingProfile, Payment, PaymentMethod, ProviderEvent
from billfold.usage.models import (
    MonthClose,
    UsageCarry,
    UsageCounter,
    UsageDaily,
    UsageEvent,
    UsagePlan,
    UsageSession,
    UsageSubscriberMonth,
)

__all__ = [
    "Account",
    "ApiKey",
    "AuditEvent",
    "BillingDetails",
    "BillingProfile",
    "ClockSetting",
    "Entry",
    "Hold",
    "IdempotencyRecord",
    "Invoice",
    "InvoiceCounter",
    "InvoiceDocument",
    "InvoiceLine",
    "MonthClose",
    "OperatorKey",
    "Organization",
    "OutboxEvent",
    "Payment",
    "PaymentMethod",
    "ProviderEvent",
    "UsageCarry",
    "UsageCounter",
    "UsageDaily",
    "UsageEvent",
    "UsagePlan",
    "UsageSession",
    "UsageSubscriberMonth",
]
