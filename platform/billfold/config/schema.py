"""The shape of billing.yaml. Every struct is frozen and rejects unknown keys."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import msgspec


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base for every config section: immutable, no unknown keys."""


class DatabaseConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: str = "sqlite+aiosqlite:///billfold.db"
    pool_size: int = 10
    max_overflow: int = 10
    echo: bool = False


class ServerConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1


class CurrencyConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    minimum_top_up: int
    maximum_top_up: int
    minor_units: int = 2
    symbol: str = ""

    def __post_init__(self) -> None:
        if self.minimum_top_up < 1:
            raise ValueError("minimum_top_up must be at least 1")
        if self.maximum_top_up < self.minimum_top_up:
            raise ValueError("maximum_top_up must not be below minimum_top_up")
        if not 0 <= self.minor_units <= 4:
            raise ValueError("minor_units must be between 0 and 4")


class ChannelConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    unit: str
    price: Decimal
    """Price of one unit in the currency's minor unit; may be fractional (0.79 = 0.79 cents)."""

    def __post_init__(self) -> None:
        if self.price < 0:
            raise ValueError("price must not be negative")


class AutoReloadDefaults(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    minimum_cents: int = 1000
    amount_cents: int = 5000
    monthly_limit_cents: int | None = None
    max_consecutive_failures: int = 3
    """Then auto-reload pauses until the tenant re-enables it."""
    max_per_day: int = 3
    """At most this many reloads a (UTC, business) day per organization (document 004's rule)."""
    retry_after_hours: float = 24
    """A declined reload is tried once more after this long (business time); then the tenant is told."""

    def __post_init__(self) -> None:
        if self.max_per_day < 1:
            raise ValueError("max_per_day must be at least 1")
        if self.retry_after_hours < 0:
            raise ValueError("retry_after_hours must not be negative")


class PortalConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where a tenant is sent: 004's 402 body carries ``topup_url``."""

    topup_url: str | None = None


class PlanStep(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One step of a plan ladder; ``price_id`` is the payment provider's price that buys it."""

    price_id: str | None = None
    messages_cap: int | None = None
    cost_cap: int | None = None
    sms_cap: int | None = None
    call_cap: int | None = None

    @property
    def paid(self) -> bool:
        return self.price_id is not None


class PlansConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Document 003's two ladders: a message step (a count per cycle) and a budget step (money on
    sms and calls per cycle, minor units). ``default`` names the steps organizations start on."""

    default: dict[str, str] = msgspec.field(default_factory=lambda: {"message": "free", "budget": "free"})
    message: dict[str, PlanStep] = msgspec.field(default_factory=lambda: {"free": PlanStep()})
    budget: dict[str, PlanStep] = msgspec.field(default_factory=lambda: {"free": PlanStep()})

    def __post_init__(self) -> None:
        for ladder in ("message", "budget"):
            step = self.default.get(ladder)
            if step not in getattr(self, ladder):
                raise ValueError(f"default.{ladder} `{step}` is not a step of plans.{ladder}")
        paid = [n for ladder in (self.message, self.budget) for n, s in ladder.items() if s.paid]
        if len(set(paid)) != len(paid):
            raise ValueError("the name of a step with a price_id must be unique across both ladders")

    def paid_step(self, name: str) -> tuple[str, PlanStep] | None:
        """(ladder, step) of the step with a provider price called ``name``."""
        for ladder in ("message", "budget"):
            step = getattr(self, ladder).get(name)
            if step is not None and step.paid:
                return ladder, step
        return None


class RateLimitsConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    unit: Literal["second", "minute", "hour", "day"] = "second"
    requests: int = 200
    store: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"


class AuthConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    key_cache_seconds: float = 60.0
    """How long a verified API key is remembered in-process when revocations are not announced
    (SQLite, or PostgreSQL's notice connection is down): other processes see a revocation within
    this many seconds; the revoking process at once."""
    key_cache_notified_seconds: float = 3600.0
    """How long a key is remembered while PostgreSQL announces revocations to every process (a
    revoked key then stops working everywhere at once; if the listening connection dies without
    a word, that is noticed within about 35 s and the cache is cleared). 0 means
    key_cache_seconds always."""


class HoldsConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    default_expires_in_seconds: int = 900
    max_expires_in_seconds: int = 7 * 24 * 3600


class WorkerConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    in_process: bool = True
    """Run the background worker inside `billfold serve` (the embedded default)."""
    poll_interval_seconds: float = 0.5
    batch_size: int = 50
    max_attempts: int = 10


class BillfoldConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    environment: Literal["development", "production"] = "development"
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    default_currency: str = "usd"
    currencies: dict[str, CurrencyConfig] = msgspec.field(default_factory=dict)
    channels: dict[str, ChannelConfig] = msgspec.field(default_factory=dict)
    auto_reload: AutoReloadDefaults = msgspec.field(default_factory=AutoReloadDefaults)
    plans: PlansConfig = msgspec.field(default_factory=PlansConfig)
    portal: PortalConfig = msgspec.field(default_factory=PortalConfig)
    rate_limits: RateLimitsConfig = msgspec.field(default_factory=RateLimitsConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    holds: HoldsConfig = msgspec.field(default_factory=HoldsConfig)
    worker: WorkerConfig = msgspec.field(default_factory=WorkerConfig)
    plugins: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """Raw plugin sections; each is validated by its plugin's own schema (see billfold.plugins)."""

    def __post_init__(self) -> None:
        if not self.currencies:
            raise ValueError("at least one currency must be declared under `currencies`")
        if self.default_currency not in self.currencies:
            raise ValueError(f"default_currency `{self.default_currency}` is not declared under `currencies`")

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def currency(self, code: str) -> CurrencyConfig:
        return self.currencies[code]
