"""Billfold: a prepaid billing platform.

This module is the public plugin API: a plugin imports from ``billfold`` only the names in
``__all__`` (first-party plugins included; a test reads their imports). Names are loaded on first
use, so ``import billfold`` stays cheap for the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # the hook contract
    "hookimpl": "billfold.hookspecs",
    "PluginState": "billfold.hookspecs",
    "PriceQuote": "billfold.hookspecs",
    "UsageItem": "billfold.hookspecs",
    "WorkerTask": "billfold.hookspecs",
    "MigrationSource": "billfold.hookspecs",
    "Direction": "billfold.hookspecs",
    "MetricsSource": "billfold.hookspecs",
    # the operator dashboard's panels (billfold_dashboard_panels)
    "DashboardPanel": "billfold.dashboard.panels",
    "DashboardAction": "billfold.dashboard.panels",
    "DashboardField": "billfold.dashboard.panels",
    "ActionCall": "billfold.dashboard.panels",
    "ActionResult": "billfold.dashboard.panels",
    # errors a plugin raises or catches
    "BillfoldError": "billfold.errors",
    "ValidationFailed": "billfold.errors",
    "Unauthorized": "billfold.errors",
    "PaymentRequired": "billfold.errors",
    "Forbidden": "billfold.errors",
    "NotFound": "billfold.errors",
    "Conflict": "billfold.errors",
    "Unprocessable": "billfold.errors",
    "StartupError": "billfold.errors",
    "RetryLater": "billfold.errors",
    # domain events and the business clock
    "emit": "billfold.events.outbox",
    "DomainEvent": "billfold.events.outbox",
    "now": "billfold.clock",
    # the payment-provider contract
    "PaymentProvider": "billfold.payments.provider",
    "Intent": "billfold.payments.provider",
    "SetupIntent": "billfold.payments.provider",
    "Method": "billfold.payments.provider",
    "Session": "billfold.payments.provider",
    "ProviderEvent": "billfold.payments.provider",
    "ProviderError": "billfold.payments.provider",
    "CardDeclined": "billfold.payments.provider",
    "ProviderUnavailable": "billfold.payments.provider",
    "InvalidWebhook": "billfold.payments.provider",
    # routes
    "operator_guard": "billfold.api.auth",
    "operator_actor": "billfold.api.auth",
    "OrgScope": "billfold.api.auth",
    "TenantController": "billfold.api.auth",
    "responses": "billfold.api.openapi",
    "ErrorEnvelope": "billfold.api.openapi",
    # tables
    "ModelBase": "billfold.db.plugin",
    "UUIDModel": "billfold.db.plugin",
    "IdentityModel": "billfold.db.plugin",
    "plugin_metadata": "billfold.db.plugin",
    "run_plugin_migrations": "billfold.db.plugin",
    "Database": "billfold.db.uow",
    # the audit trail of operator actions
    "AuditActor": "billfold.audit.service",
    "record_audit": "billfold.audit.service",
    # the command line
    "run_command": "billfold.cli_support",
    "cli_actor": "billfold.audit.commands",
    # money and bounded fields
    "format_minor": "billfold.money",
    "major_to_minor": "billfold.money",
    "round_minor": "billfold.money",
    "MAX_AMOUNT": "billfold.fields",
    "Amount": "billfold.fields",
    "NonNegativeAmount": "billfold.fields",
    "SignedAmount": "billfold.fields",
    "Description": "billfold.fields",
    "ShortText": "billfold.fields",
    "Name": "billfold.fields",
    "Metadata": "billfold.fields",
    "Url": "billfold.fields",
    # what `state` offers (for annotations)
    "BillfoldConfig": "billfold.config.schema",
    "LedgerService": "billfold.ledger.service",
    "HoldService": "billfold.ledger.holds",
    "OrgService": "billfold.orgs.service",
    "OrgRow": "billfold.orgs.service",
    "AccountRow": "billfold.ledger.rows",
    "EntryRow": "billfold.ledger.rows",
    "HoldRow": "billfold.ledger.rows",
    "Posted": "billfold.ledger.rows",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'billfold' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from billfold.api.auth import OrgScope, TenantController, operator_actor, operator_guard
    from billfold.api.openapi import ErrorEnvelope, responses
    from billfold.audit.commands import cli_actor
    from billfold.audit.service import AuditActor, record_audit
    from billfold.cli_support import run_command
    from billfold.clock import now
    from billfold.config.schema import BillfoldConfig
    from billfold.dashboard.panels import (
        ActionCall,
        ActionResult,
        DashboardAction,
        DashboardField,
        DashboardPanel,
    )
    from billfold.db.plugin import IdentityModel, ModelBase, UUIDModel, plugin_metadata, run_plugin_migrations
    from billfold.db.uow import Database
    from billfold.errors import (
        BillfoldError,
        Conflict,
        Forbidden,
        NotFound,
        PaymentRequired,
        RetryLater,
        StartupError,
        Unauthorized,
        Unprocessable,
        ValidationFailed,
    )
    from billfold.events.outbox import DomainEvent, emit
    from billfold.fields import (
        MAX_AMOUNT,
        Amount,
        Description,
        Metadata,
        Name,
        NonNegativeAmount,
        ShortText,
        SignedAmount,
        Url,
    )
    from billfold.hookspecs import (
        Direction,
        MetricsSource,
        MigrationSource,
        PluginState,
        PriceQuote,
        UsageItem,
        WorkerTask,
        hookimpl,
    )
    from billfold.ledger.holds import HoldService
    from billfold.ledger.rows import AccountRow, EntryRow, HoldRow, Posted
    from billfold.ledger.service import LedgerService
    from billfold.money import format_minor, major_to_minor, round_minor
    from billfold.orgs.service import OrgRow, OrgService
    from billfold.payments.provider import (
        CardDeclined,
        Intent,
        InvalidWebhook,
        Method,
        PaymentProvider,
        ProviderError,
        ProviderEvent,
        ProviderUnavailable,
        Session,
        SetupIntent,
    )
