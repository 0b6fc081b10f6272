"""AppState: everything a running Billfold holds (config, engine, plugins, services)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pluggy
from sqlalchemy.ext.asyncio import AsyncEngine

from billfold.config import BillfoldConfig
from billfold.config.loader import _Lines
from billfold.db import create_engine
from billfold.events.worker import Worker
from billfold.ledger.service import LedgerService
from billfold.orgs.revocations import RevocationListener
from billfold.orgs.service import KeyCache, OrgService
from billfold.plugins import create_plugin_manager, validate_plugin_configs

if TYPE_CHECKING:
    from billfold.api.ratelimit import WindowCounters
    from billfold.payments.provider import PaymentProvider
    from billfold.payments.service import PaymentService


class AppState:
    """Built once per process from a validated config; shared by routes, CLI and worker."""

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
        self.plugin_configs: dict[str, Any] = validate_plugin_configs(
            self.pm, config.plugins, lines=lines, source=source
        )
        self.engine = engine or create_engine(config.database)
        self.admin_api_key = os.environ.get("BILLFOLD_ADMIN_API_KEY") or None
        self.ledger = LedgerService(self.pm, self)
        self.orgs = OrgService(
            self.engine,
            self.ledger,
            key_prefix="sk_live_" if config.is_production else "sk_test_",
            key_cache=KeyCache(config.auth.key_cache_seconds, config.auth.key_cache_notified_seconds),
            pm=self.pm,
            config=config,
        )
        self.revocations = RevocationListener(self.engine, self.orgs.key_cache)
        self.worker = Worker(self)
        self.rate_limit_counters: WindowCounters | None = None
        """Set by the app when rate limits are on (billfold.api.ratelimit)."""
        self._provider: PaymentProvider | None = None
        self._payments: PaymentService | None = None

    def plugin_config(self, name: str) -> Any:
        """The validated ``plugins.<name>`` section (the plugin's own Struct)."""
        return self.plugin_configs[name]

    @property
    def provider(self) -> PaymentProvider:
        if self._provider is None:
            provider = self.pm.hook.billfold_payment_provider(state=self)
            if provider is None:
                raise RuntimeError("no payment provider answered billfold_payment_provider")
            self._provider = provider
        return self._provider

    @property
    def payments(self) -> PaymentService:
        if self._payments is None:
            from billfold.payments.service import PaymentService

            self._payments = PaymentService(self)
        return self._payments

    async def close(self) -> None:
        await self.worker.stop()
        await self.revocations.stop()
        if self.rate_limit_counters is not None:
            await self.rate_limit_counters.close()
        provider = self._provider
        if provider is not None:
            await provider.close()
        await self.engine.dispose()
