"""The Litestar application factory."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from litestar import Litestar, Request, get
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address
from litestar.openapi.config import OpenAPIConfig
from litestar.plugins import InitPluginProtocol
from sqlalchemy import text

from billfold import __version__
from billfold.api.auth import admin_guard
from billfold.api.errors import exception_handlers
from billfold.api.ratelimit import (
    MemoryWindowCounters,
    RedisWindowCounters,
    WindowCounterRateLimitMiddleware,
    WindowCounters,
)
from billfold.ledger.routes import CreditsController, LedgerController
from billfold.orgs.routes import AdminController, KeysController
from billfold.payments.routes import (
    PAYMENT_ROUTES,
    BillingController,
    OrganizationBillingController,
    OrgBillingController,
)
from billfold.plugins import call_all, plugin_names
from billfold.state import AppState

logger = logging.getLogger("billfold")


def _rate_limit_identifier(request: Request[Any, Any, Any]) -> str:
    """Limit per credential when one is sent, else per client address."""
    header = request.headers.get("authorization")
    if header:
        return hashlib.blake2b(header.encode(), digest_size=12).hexdigest()
    return get_remote_address(request)


@get("/health", operation_id="Health", tags=["system"], exclude_from_auth=True)
async def health(state: State) -> dict[str, str]:
    app_state: AppState = state["billfold"]
    async with app_state.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__}


@get("/v1/admin/plugins", operation_id="AdminListPlugins", tags=["operator"], guards=[admin_guard])
async def list_plugins(state: State) -> list[dict[str, Any]]:
    app_state: AppState = state["billfold"]
    return plugin_names(app_state.pm)


class BillfoldPlugin(InitPluginProtocol):
    """Configures the app in small steps (routes, errors, rate limits, OpenAPI, lifespan)."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        self._configure_routes(app_config)
        self._configure_errors(app_config)
        self._configure_rate_limits(app_config)
        self._configure_openapi(app_config)
        self._configure_lifespan(app_config)
        app_config.state.update({"billfold": self.state})
        return app_config

    def _configure_routes(self, app_config: AppConfig) -> None:
        app_config.route_handlers.extend(
            [
                health,
                list_plugins,
                AdminController,
                KeysController,
                LedgerController,
                CreditsController,
                BillingController,
                OrgBillingController,
                OrganizationBillingController,
                *PAYMENT_ROUTES,
            ]
        )
        for answer in self.state.pm.hook.billfold_routes(state=self.state):
            app_config.route_handlers.extend(cast("list[Any]", answer or []))

    def _configure_errors(self, app_config: AppConfig) -> None:
        app_config.exception_handlers.update(exception_handlers)

    def _configure_rate_limits(self, app_config: AppConfig) -> None:
        limits = self.state.config.rate_limits
        if not limits.enabled:
            return
        counters: WindowCounters
        if limits.store == "redis":
            from redis.asyncio import Redis

            counters = RedisWindowCounters(Redis.from_url(limits.redis_url))
        else:
            counters = MemoryWindowCounters()
        self.state.rate_limit_counters = counters
        config = RateLimitConfig(
            rate_limit=(limits.unit, limits.requests),
            exclude=["/health", "/schema"],
            identifier_for_request=_rate_limit_identifier,
        )
        app_config.middleware.append(
            DefineMiddleware(WindowCounterRateLimitMiddleware, config=config, counters=counters)
        )

    def _configure_openapi(self, app_config: AppConfig) -> None:
        app_config.openapi_config = OpenAPIConfig(
            title="Billfold", version=__version__, description="Prepaid billing: balances, usage, top-ups."
        )

    def _configure_lifespan(self, app_config: AppConfig) -> None:
        state = self.state

        @asynccontextmanager
        async def lifespan(_: Litestar) -> AsyncIterator[None]:
            async with state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            await state.revocations.start()
            await call_all(state.pm.hook.billfold_startup(state=state))
            await state.worker.load_handlers()
            if state.config.worker.in_process:
                state.worker.start()
            try:
                yield
            finally:
                await state.close()

        app_config.lifespan.append(lifespan)


def create_app(state: AppState) -> Litestar:
    return Litestar(plugins=[BillfoldPlugin(state)], debug=False)


def create_app_from_env() -> Litestar:
    """ASGI factory for servers: reads BILLFOLD_CONFIG (used by `billfold serve` workers)."""
    from billfold.config import load_config

    config, lines = load_config()
    from billfold.config.loader import default_config_path

    return create_app(AppState(config, lines=lines, source=str(default_config_path())))
