"""The composition root: the only module that imports every domain.

:class:`Billfold` builds every service once, each with exactly its collaborators (the database,
the ledger, the hook caller, its own config section); :class:`BillfoldPlugin` mounts the routes
and hands each route the services it names, through one Litestar dependency provider per
service. The CLI and the tests use the same :class:`Billfold`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pluggy
from litestar import Litestar, Request
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins import InitPluginProtocol
from sqlalchemy.ext.asyncio import AsyncEngine

from billfold import __version__
from billfold.api.auth import (
    KEYS_STATE_KEY,
    OPERATOR_STATE_KEY,
    OperatorAuth,
    provide_actor,
    provide_org_scope,
)
from billfold.api.dependencies import resolve_in_sequence
from billfold.api.errors import FAMILY_004_STATE_KEY, exception_handlers
from billfold.api.openapi import (
    PYTHON_SPACE,
    BodySchemaPlugin,
    Refinements,
    StructSchemaPlugin,
    fix_auto_options_allow,
)
from billfold.api.ratelimit import (
    MemoryWindowCounters,
    RedisWindowCounters,
    WindowCounterRateLimitMiddleware,
    WindowCounters,
)
from billfold.api.request import BillfoldRequest
from billfold.audit.actions import OperatorActions
from billfold.audit.service import BOOTSTRAP, AuditService, OperatorKeyService
from billfold.clock import BusinessClock
from billfold.config import BillfoldConfig
from billfold.config.loader import _Lines
from billfold.db import Database, create_engine
from billfold.events.outbox import bind_reactions
from billfold.events.worker import Worker
from billfold.fields import MAX_BODY_BYTES
from billfold.invoices.service import InvoiceService, LinkSigner
from billfold.ledger.holds import HoldService
from billfold.ledger.idempotency import IdempotencyService
from billfold.ledger.service import LedgerService
from billfold.orgs.keys import KeyCache, KeyService
from billfold.orgs.revocations import RevocationListener
from billfold.orgs.service import OrgService
from billfold.payments.autoreload import AutoReloadService
from billfold.payments.credits import CreditService
from billfold.payments.methods import MethodService
from billfold.payments.profiles import ProfileService
from billfold.payments.provider import PaymentProvider
from billfold.payments.topups import TopUpService
from billfold.payments.webhooks import WebhookService
from billfold.plugins import (
    Hooks,
    HookState,
    create_plugin_manager,
    switch_off_disabled,
    validate_plugin_configs,
)
from billfold.usage.close import MonthCloseService
from billfold.usage.plans import PlanService
from billfold.usage.pricing import FlatPrices
from billfold.usage.reports import UsageReports
from billfold.usage.service import UsageService

logger = logging.getLogger("billfold")

CORE_PLUGINS = (
    "billfold.orgs.service",
    "billfold.payments.profiles",
    "billfold.payments.autoreload",
    "billfold.usage.plans",
    "billfold.usage.pricing",
    "billfold.usage.service",
    "billfold.usage.close",
)
"""The core's services that implement hooks, registered on the plugin manager like plugins."""


def invoice_link_secret() -> bytes:
    """The key of signed invoice links: ``BILLFOLD_INVOICE_LINK_SECRET``; without it, one derived
    from the operator key (``BILLFOLD_ADMIN_API_KEY``), so every process of a deployment agrees;
    without either, a random key of this process (links then work only where they were made)."""
    secret = os.environ.get("BILLFOLD_INVOICE_LINK_SECRET")
    if secret:
        return secret.encode()
    admin = os.environ.get("BILLFOLD_ADMIN_API_KEY")
    if admin:
        return hashlib.blake2b(b"billfold invoice links", key=admin.encode()[:64]).digest()
    return os.urandom(32)


class Billfold:
    """Every service of a running Billfold, built once from a validated config."""

    def __init__(
        self,
        config: BillfoldConfig,
        *,
        lines: _Lines | None = None,
        source: str = "<config>",
        pm: pluggy.PluginManager | None = None,
        engine: AsyncEngine | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.pm = pm or create_plugin_manager()
        self.sections = validate_plugin_configs(self.pm, config.plugins, lines=lines, source=source)
        self.switched_off = switch_off_disabled(self.pm, self.sections)
        self.engine = engine or create_engine(config.database)
        self.db = Database(self.engine)
        self.clock = BusinessClock(self.db, production=config.is_production)
        self.hook_state = HookState(config, self.sections, self.db)
        self.hooks = Hooks(self.pm, self.hook_state)
        bind_reactions(self.engine, self.hooks)
        self._provider: PaymentProvider | None = None

        self.ledger = LedgerService(self.db, self.hooks)
        self.holds = HoldService(self.db, self.ledger)
        self.idempotency = IdempotencyService(self.db)
        self.key_cache: KeyCache[uuid.UUID] = KeyCache(
            config.auth.key_cache_seconds, config.auth.key_cache_notified_seconds
        )
        self.operator_key_cache: KeyCache[str] = KeyCache(
            config.auth.key_cache_seconds, config.auth.key_cache_notified_seconds
        )
        self.operator_keys = OperatorKeyService(self.db, self.operator_key_cache)
        self.audit = AuditService(self.db)
        self.keys = KeyService(
            self.db, self.key_cache, prefix="sk_live_" if config.is_production else "sk_test_"
        )
        self.orgs = OrgService(
            self.db,
            self.ledger,
            self.keys,
            self.hooks,
            currencies=config.currencies,
            default_currency=config.default_currency,
        )
        self.revocations = RevocationListener(self.engine, self.key_cache, also=[self.operator_key_cache])
        self.profiles = ProfileService(self.db, config.auto_reload)
        self.credits = CreditService(self.db, self.ledger)
        self.methods = MethodService(self.db, self.profiles, self.orgs, self.provider_now)
        self.autoreload = AutoReloadService(
            self.db,
            ledger=self.ledger,
            profiles=self.profiles,
            credits=self.credits,
            provider=self.provider_now,
            defaults=config.auto_reload,
        )
        self.topups = TopUpService(
            self.db,
            ledger=self.ledger,
            profiles=self.profiles,
            methods=self.methods,
            credits=self.credits,
            idempotency=self.idempotency,
            currencies=config.currencies,
            provider=self.provider_now,
        )
        self.webhooks = WebhookService(
            self.db, ledger=self.ledger, credits=self.credits, methods=self.methods, hooks=self.hooks
        )
        self.plan_service = PlanService(self.db, config.plans, self.orgs)
        self.flat_prices = FlatPrices(config.channels)
        self.usage = UsageService(
            self.db,
            ledger=self.ledger,
            holds=self.holds,
            orgs=self.orgs,
            profiles=self.profiles,
            plans=self.plan_service,
            hooks=self.hooks,
            channels=config.channels,
            currencies=config.currencies,
            config=config.usage,
        )
        self.reports = UsageReports(self.db, self.hooks)
        self.invoices = InvoiceService(
            self.db,
            config.invoices,
            currencies=config.currencies,
            channels=config.channels,
            links=LinkSigner(invoice_link_secret()),
        )
        self.month_close = MonthCloseService(
            self.db, self.orgs, self.hooks, config.usage, ledger=self.ledger, invoices=self.invoices
        )
        self.worker = Worker(
            db=self.db, holds=self.holds, hooks=self.hooks, clock=self.clock, config=config.worker
        )
        self.operator = OperatorAuth(
            {BOOTSTRAP: os.environ.get("BILLFOLD_ADMIN_API_KEY", "")}, self.operator_keys
        )
        self.actions = OperatorActions(
            self.db,
            ledger=self.ledger,
            orgs=self.orgs,
            keys=self.keys,
            plans=self.plan_service,
            clock=self.clock,
        )
        self.rate_limit_counters: WindowCounters | None = None
        self.hook_state.bind(
            ledger=self.ledger,
            holds=self.holds,
            orgs=self.orgs,
            provider=self.provider_now,
            wake=self.worker.wake,
        )
        core = (
            self.orgs,
            self.profiles,
            self.autoreload,
            self.plan_service,
            self.flat_prices,
            self.usage,
            self.month_close,
        )
        for name, service in zip(CORE_PLUGINS, core, strict=True):
            if self.pm.get_plugin(name) is None:
                self.pm.register(service, name=name)
        self._clock_refresher: asyncio.Task[None] | None = None

    # -- what routes receive ------------------------------------------------------------------------

    def provider_now(self) -> PaymentProvider:
        """The active payment provider (the first answer of ``billfold_payment_provider``)."""
        if self._provider is None:
            provider = self.pm.hook.billfold_payment_provider(state=self.hook_state)
            if provider is None:
                raise RuntimeError("no payment provider answered billfold_payment_provider")
            self._provider = provider
        return self._provider

    @property
    def provider(self) -> PaymentProvider:
        return self.provider_now()

    def plugin_config(self, name: str) -> Any:
        return self.sections.configs[name]

    def dependencies(self) -> dict[str, Provide]:
        """One provider per service (and per config section a route reads)."""

        def value(item: Any) -> Provide:
            return Provide(lambda: item, use_cache=True, sync_to_thread=False)

        return {
            "org": Provide(provide_org_scope),
            "keys": value(self.keys),
            "orgs": value(self.orgs),
            "ledger": value(self.ledger),
            "holds": value(self.holds),
            "idempotency": value(self.idempotency),
            "profiles": value(self.profiles),
            "methods": value(self.methods),
            "topups": value(self.topups),
            "autoreload": value(self.autoreload),
            "webhooks": value(self.webhooks),
            "usage": value(self.usage),
            "reports": value(self.reports),
            "plan_service": value(self.plan_service),
            "month_close": value(self.month_close),
            "invoices": value(self.invoices),
            "actions": value(self.actions),
            "audit": value(self.audit),
            "audit_actor": Provide(provide_actor),
            "channels": value(self.config.channels),
            "db": value(self.db),
            "clock": value(self.clock),
            "pm": value(self.pm),
            "sections": value(self.sections),
            "currencies": value(self.config.currencies),
            "holds_config": value(self.config.holds),
            "production": value(self.config.is_production),
            "plans": value(self.config.plans),
            "wake_worker": value(self.worker.wake),
            "provider": Provide(self.provider_now, sync_to_thread=False),
        }

    # -- lifetime -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Everything a serving process does before its first request."""
        await self.db.ping()
        await self.clock.start()
        await self.revocations.start()
        await self.hooks.call("billfold_startup")
        await self.worker.load_handlers()
        if not self.config.is_production:
            self._clock_refresher = asyncio.create_task(self._refresh_clock(), name="billfold-clock")
        if self.config.worker.in_process:
            self.worker.start()

    async def _refresh_clock(self) -> None:
        """Outside production, pick up an advance made by another process within a second."""
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await self.clock.load()

    async def close(self) -> None:
        if self._clock_refresher is not None:
            self._clock_refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock_refresher
        await self.worker.stop()
        await self.revocations.stop()
        if self.rate_limit_counters is not None:
            await self.rate_limit_counters.close()
        if self._provider is not None:
            await self._provider.close()
        await self.engine.dispose()


NON_BLANK = f"[^{PYTHON_SPACE}]"
"""Some character that is not white space (Python's, as ``str.strip`` sees it; the same class in
ECMA-262 and Python regular expressions)."""


def _any_case(code: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" for c in code)


def body_refinements(config: BillfoldConfig) -> Refinements:
    """What the services check in request bodies beyond the types, for the OpenAPI document: the
    configured top-up bounds and currencies (the widest over the currencies: a currency's own
    bounds are in the description), the hold lifetime, a non-blank name, a non-zero adjustment,
    and the two amounts that must come with enabling auto-reload."""
    from billfold.api import family_002 as f002
    from billfold.api import family_004 as f004
    from billfold.invoices.schemas import DetailsIn, VoidIn
    from billfold.ledger.schemas import HoldIn
    from billfold.orgs.schemas import AdjustmentIn, OrganizationCreate
    from billfold.payments.schemas import BillingAccountPatch, CustomerBillingIn, TopUpIn
    from billfold.usage.plans import PlanChange
    from billfold.usage.schemas import UsageIn

    currencies = config.currencies
    per_currency = "; ".join(
        f"{code}: {c.minimum_top_up} to {c.maximum_top_up}" for code, c in sorted(currencies.items())
    )
    lowest = min(c.minimum_top_up for c in currencies.values())
    highest = max(c.maximum_top_up for c in currencies.values())
    top_up = {
        "minimum": lowest,
        "maximum": highest,
        "description": f"Minor units, within the organization's currency's top-up bounds ({per_currency}).",
    }
    decimals = max(c.minor_units for c in currencies.values())
    major = {
        "type": "number",
        "format": None,
        "minimum": min(c.minimum_top_up / 10**c.minor_units for c in currencies.values()),
        "maximum": max(c.maximum_top_up / 10**c.minor_units for c in currencies.values()),
        "multipleOf": 10**-decimals if decimals else 1,
    }
    currency = {"pattern": "^(?:" + "|".join(_any_case(code) for code in sorted(currencies)) + ")$"}
    non_blank = {"allOf": [{"pattern": NON_BLANK}]}

    def together(enabled: str, *fields: str) -> dict[str, Any]:
        return {
            "if": {"properties": {enabled: {"const": True}}, "required": [enabled]},
            "then": {"required": list(fields)},
        }

    def one_of(values: list[str]) -> dict[str, Any]:
        return {"enum": values} if values else {"not": {}}

    plans = config.plans
    return {
        UsageIn: {"channel": one_of(sorted(config.channels)), "": {"allOf": usage_rules(config)}},
        CustomerBillingIn: {
            "messagePriceId": one_of([s.price_id for s in plans.message.values() if s.price_id]),
            "budgetPriceId": one_of([s.price_id for s in plans.budget.values() if s.price_id]),
        },
        PlanChange: {"message_step": one_of(list(plans.message)), "budget_step": one_of(list(plans.budget))},
        TopUpIn: {"amount_cents": top_up},
        f002.HostedTopUpRequest: {
            "amountDecimillicents": {
                "minimum": lowest * f002.DECIMILLICENTS_PER_CENT,
                "maximum": highest * f002.DECIMILLICENTS_PER_CENT,
            }
        },
        f004.MajorTopUpRequest: {"amount": major, "currency": currency},
        OrganizationCreate: {"name": non_blank, "currency": currency},
        DetailsIn: {"legal_name": non_blank},
        VoidIn: {"reason": non_blank},
        HoldIn: {"expires_in_seconds": {"maximum": config.holds.max_expires_in_seconds}},
        AdjustmentIn: {"amount_cents": {"not": {"const": 0}}},
        BillingAccountPatch: {
            "": together("auto_reload_enabled", "auto_reload_minimum_cents", "auto_reload_amount_cents")
        },
        f004.AutoReloadUpdate: {
            "": together("enabled", "trigger_threshold", "reload_amount"),
            "trigger_threshold": {"multipleOf": 10**-decimals if decimals else 1},
            "reload_amount": {"exclusiveMinimum": 0, "multipleOf": 10**-decimals if decimals else 1},
            "monthly_limit": {"multipleOf": 10**-decimals if decimals else 1},
        },
    }


def usage_rules(config: BillfoldConfig) -> list[dict[str, Any]]:
    """What a usage event must hold beyond its types, per channel of billing.yaml: the message types
    the channel declares (none: no message type), and the id a session- or subscriber-charged type
    needs."""
    rules: list[dict[str, Any]] = []
    for name, channel in sorted(config.channels.items()):
        when = {"if": {"properties": {"channel": {"const": name}}, "required": ["channel"]}}
        types = sorted(channel.message_types)
        allowed = {"enum": [*types, None]} if types else {"type": "null"}
        rules.append({**when, "then": {"properties": {"message_type": allowed}}})
        for type_name, message_type in sorted(channel.message_types.items()):
            needs = {"session": "session_id", "subscriber_month": "subscriber_id"}.get(message_type.charge)
            if needs is None:
                continue
            condition = {"channel": {"const": name}, "message_type": {"const": type_name}}
            rules.append(
                {
                    "if": {"properties": condition, "required": ["channel", "message_type"]},
                    "then": {"required": [needs], "properties": {needs: {"type": "string"}}},
                }
            )
    return rules


def _rate_limit_identifier(request: Request[Any, Any, Any]) -> str:
    """Limit per credential when one is sent, else per client address."""
    header = request.headers.get("authorization")
    if header:
        return hashlib.blake2b(header.encode(), digest_size=12).hexdigest()
    return get_remote_address(request)


class BillfoldPlugin(InitPluginProtocol):
    """Configures the app in small steps (routes, dependencies, errors, rate limits, OpenAPI, lifespan)."""

    def __init__(self, billfold: Billfold) -> None:
        self.billfold = billfold

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        self._configure_routes(app_config)
        self._configure_dependencies(app_config)
        self._configure_errors(app_config)
        self._configure_requests(app_config)
        self._configure_rate_limits(app_config)
        self._configure_openapi(app_config)
        self._configure_logging(app_config)
        self._configure_metrics(app_config)
        self._configure_lifespan(app_config)
        config = self.billfold.config
        app_config.state.update(
            {
                OPERATOR_STATE_KEY: self.billfold.operator,
                KEYS_STATE_KEY: self.billfold.keys,
                FAMILY_004_STATE_KEY: {
                    "topup_url": config.portal.topup_url,
                    "minor_units": {code: c.minor_units for code, c in config.currencies.items()},
                },
            }
        )
        return app_config

    def _configure_routes(self, app_config: AppConfig) -> None:
        from billfold.api.system import SYSTEM_ROUTES
        from billfold.audit.routes import AUDIT_ROUTES
        from billfold.invoices.routes import INVOICE_ROUTES
        from billfold.ledger.routes import CreditsController, LedgerController
        from billfold.orgs.routes import AdminController, KeysController
        from billfold.payments.routes import PAYMENT_ROUTES
        from billfold.payments.routes_002 import ROUTES_002
        from billfold.payments.routes_004 import ROUTES_004
        from billfold.usage.routes import USAGE_ROUTES

        app_config.route_handlers.extend(
            [
                *SYSTEM_ROUTES,
                AdminController,
                KeysController,
                LedgerController,
                CreditsController,
                *PAYMENT_ROUTES,
                *ROUTES_002,
                *ROUTES_004,
                *USAGE_ROUTES,
                *INVOICE_ROUTES,
                *AUDIT_ROUTES,
            ]
        )
        for answer in self.billfold.hooks.call_sync("billfold_routes"):
            app_config.route_handlers.extend(cast("list[Any]", answer or []))
        self._configure_dashboard(app_config)

    def _configure_dashboard(self, app_config: AppConfig) -> None:
        """The operator dashboard at /dashboard (its own session and CSRF middleware, templates)."""
        from billfold.dashboard.render import template_config
        from billfold.dashboard.routes import dashboard_routers

        routers, state = dashboard_routers(self.billfold)
        app_config.route_handlers.extend(routers)
        app_config.template_config = template_config()
        app_config.state.update(state)

    def _configure_dependencies(self, app_config: AppConfig) -> None:
        app_config.dependencies.update(self.billfold.dependencies())

    def _configure_errors(self, app_config: AppConfig) -> None:
        app_config.exception_handlers.update(exception_handlers)

    def _configure_requests(self, app_config: AppConfig) -> None:
        # The body size limit is given to Litestar() in create_app: Litestar reads it from its
        # constructor argument, not from the config an on_app_init hook returns.
        app_config.request_class = BillfoldRequest

    def _configure_rate_limits(self, app_config: AppConfig) -> None:
        limits = self.billfold.config.rate_limits
        if not limits.enabled:
            return
        counters: WindowCounters
        if limits.store == "redis":
            from redis.asyncio import Redis

            counters = RedisWindowCounters(Redis.from_url(limits.redis_url))
        else:
            counters = MemoryWindowCounters()
        self.billfold.rate_limit_counters = counters
        config = RateLimitConfig(
            rate_limit=(limits.unit, limits.requests),
            exclude=["/health", "/schema"],
            identifier_for_request=_rate_limit_identifier,
        )
        app_config.middleware.append(
            DefineMiddleware(WindowCounterRateLimitMiddleware, config=config, counters=counters)
        )

    def _configure_openapi(self, app_config: AppConfig) -> None:
        # Request bodies as the decoder reads them, and the rules the services add. Replaced in
        # place: the plugin list is being iterated while plugins configure the app.
        for index, plugin in enumerate(app_config.plugins):
            if type(plugin) is StructSchemaPlugin:
                app_config.plugins[index] = BodySchemaPlugin(body_refinements(self.billfold.config))
        # The documentation pages whose scripts Billfold serves itself (no CDN).
        from billfold.api.docs import asset_routers, find_assets, render_plugins

        assets = find_assets()
        app_config.route_handlers.extend(asset_routers(assets))
        app_config.openapi_config = OpenAPIConfig(
            title="Billfold",
            version=__version__,
            description="Prepaid billing: balances, usage, top-ups. Authenticate with "
            "`Authorization: Bearer <key>` (a tenant's API key, or an operator key on /v1/admin). "
            "Bodies are JSON (`Content-Type: application/json`, at most 1 MiB, nested at most 32 "
            "levels, no NUL character in any string); an integer is written as a JSON integer "
            "(`1000`, not `1000.0` or `1e3`); every error is the `ErrorEnvelope`.",
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http", scheme="bearer", description="A tenant API key, or an operator key"
                    )
                }
            ),
            security=[{"bearer": []}],
            render_plugins=render_plugins(assets),
        )

    def _configure_logging(self, app_config: AppConfig) -> None:
        from billfold.logs import AccessLog, flush_request_lines, litestar_logging_config

        logs = self.billfold.config.logging
        app_config.logging_config = litestar_logging_config(logs)
        if logs.requests:
            # Outermost: the line covers the rate limiter's answers too.
            app_config.middleware.insert(0, AccessLog())
            # At shutdown, after the lifespans: the lines written in batches are out before the end.
            app_config.on_shutdown.append(flush_request_lines)

    def _configure_metrics(self, app_config: AppConfig) -> None:
        # After the logging: the metrics middleware goes first (outermost).
        if self.billfold.config.metrics.enabled:
            from billfold.metrics.service import install

            install(self.billfold, app_config)

    def _configure_lifespan(self, app_config: AppConfig) -> None:
        billfold = self.billfold

        @asynccontextmanager
        async def lifespan(_: Litestar) -> AsyncIterator[None]:
            await billfold.start()
            try:
                yield
            finally:
                await billfold.close()

        app_config.lifespan.append(lifespan)


def create_app(billfold: Billfold) -> Litestar:
    app = Litestar(plugins=[BillfoldPlugin(billfold)], request_max_body_size=MAX_BODY_BYTES, debug=False)
    resolve_in_sequence(app)
    fix_auto_options_allow(app)
    return app


def build(path: str | None = None) -> Billfold:
    """A Billfold from the config file (``BILLFOLD_CONFIG`` or config/billing.yaml)."""
    from billfold.config import load_config
    from billfold.config.loader import default_config_path

    config, lines = load_config(path)
    return Billfold(config, lines=lines, source=str(path or default_config_path()))


def create_app_from_env() -> Litestar:
    """ASGI factory for servers: reads BILLFOLD_CONFIG (used by `billfold serve` workers)."""
    return create_app(build())
