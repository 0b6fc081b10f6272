"""The shape of billing.yaml. Every struct is frozen and rejects unknown keys."""

from __future__ import annotations

import re
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


Price = Decimal | dict[str, Decimal]
"""A unit price in minor units (fractions allowed): one number for every currency, or one per currency
(``{usd: 8, eur: 7}``)."""


def _check_price(price: Price, where: str) -> None:
    for value in price.values() if isinstance(price, dict) else [price]:
        if not value.is_finite() or value < 0:
            raise ValueError(f"{where} must be a non-negative number")
        if value != value.quantize(Decimal(1).scaleb(-MAX_PRICE_DECIMALS)):
            raise ValueError(f"{where} has more than {MAX_PRICE_DECIMALS} decimals")
        if value > MAX_UNIT_PRICE:
            raise ValueError(f"{where} must not exceed {MAX_UNIT_PRICE}")


MAX_PRICE_DECIMALS = 8
MAX_UNIT_PRICE = Decimal(10**9)
"""Bounds on a unit price: exact carries stay small, and no event's amount overflows a cent count."""


class MessageTypeConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A message type of a channel (document 004's basic, single, conversation, mau; a call tier).

    ``charge``: ``unit`` prices every unit; ``session`` charges the first send of a session
    (``session_id``) and lets later sends within ``usage.session_hours`` go free; ``subscriber_month``
    charges one send per subscriber and agent per UTC calendar month."""

    price: Price
    charge: Literal["unit", "session", "subscriber_month"] = "unit"

    def __post_init__(self) -> None:
        _check_price(self.price, "price")


class ChannelConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    unit: str
    """What one billed unit is called (minute, message)."""
    price: Price
    """Price of one unit in the currency's minor unit; may be fractional (0.79 = 0.79 cents)."""
    message_types: dict[str, MessageTypeConfig] = msgspec.field(default_factory=dict)
    """Priced variants of the channel; a usage event may name one (``message_type``)."""
    increment_seconds: int | None = None
    """Time-billed channels: the quantity is reported in seconds and billed per started increment
    (60 = per started minute: ceil(seconds / 60), 0 s is 0)."""

    def __post_init__(self) -> None:
        _check_price(self.price, "price")
        if self.increment_seconds is not None and not 1 <= self.increment_seconds <= 86400:
            raise ValueError("increment_seconds must be between 1 and 86400")

    def price_for(self, message_type: str | None, currency: str) -> Decimal:
        price = self.message_types[message_type].price if message_type else self.price
        return price[currency] if isinstance(price, dict) else price

    def billed(self, quantity: int) -> int:
        """Billed units for a reported quantity (started increments on a time-billed channel)."""
        if self.increment_seconds is None:
            return quantity
        return -(-quantity // self.increment_seconds)


class UsageConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    session_hours: float = 24
    """A ``session``-charged message type: later sends of a session within this window are free."""
    max_batch: int = 1000
    """Events in one POST /v1/usage/batch."""
    month_close_after_minutes: float = 5
    """The worker closes a UTC month for every organization this long after it ended (business time)."""
    reserve_expires_in_seconds: int = 900
    """How long a reserved send's hold lives before it is released (real time)."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch <= 10000:
            raise ValueError("max_batch must be between 1 and 10000")
        if self.session_hours <= 0:
            raise ValueError("session_hours must be positive")


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
    message_channels: list[str] = msgspec.field(
        default_factory=lambda: ["email", "push", "inapp_web", "web_push", "slack"]
    )
    """Channels whose units count toward ``messages_cap`` (document 003's message channels)."""
    budget_channels: list[str] = msgspec.field(default_factory=lambda: ["sms", "call"])
    """Channels whose spend counts toward ``cost_cap`` (``sms_cap`` and ``call_cap`` name sms and call)."""
    unverified_caps: dict[str, int] = msgspec.field(default_factory=dict)
    """Units per cycle an unverified organization may send on a channel (a channel not named: none)."""

    def __post_init__(self) -> None:
        for ladder in ("message", "budget"):
            step = self.default.get(ladder)
            if step not in getattr(self, ladder):
                raise ValueError(f"default.{ladder} `{step}` is not a step of plans.{ladder}")
        paid = [n for ladder in (self.message, self.budget) for n, s in ladder.items() if s.paid]
        if len(set(paid)) != len(paid):
            raise ValueError("the name of a step with a price_id must be unique across both ladders")

    def rank(self, ladder: str, name: str) -> int:
        """A step's place on its ladder (the YAML order, cheapest first)."""
        return list(getattr(self, ladder)).index(name)

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


class LoggingConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    format: Literal["text", "json"] = "text"
    """``json``: one JSON object per line (requests, background jobs and every other log line)."""
    level: Literal["debug", "info", "warning", "error"] = "info"
    requests: bool = True
    """One line per HTTP request (tracking id, organization, route, status, duration)."""


class MetricsConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``GET /metrics`` in Prometheus's text format."""

    enabled: bool = True
    port: int | None = None
    """Serve /metrics on this port (and not on the API's); null: on the API's port."""
    host: str | None = None
    """The interface of ``port`` (default: ``server.host``)."""
    require_operator_key: bool = True
    """Ask for an operator key (``Authorization: Bearer <key>``), on either port."""

    def __post_init__(self) -> None:
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError("port must be between 1 and 65535, or null")


class InvoicesConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The operator's details printed on every invoice, the number prefix and the tax per currency.

    Prices are tax-inclusive (a prepaid balance is spent gross): an invoice shows the tax its total
    contains at ``tax_rates[currency]`` percent (exact decimal; a currency not named: 0)."""

    operator_name: str = "Billfold"
    operator_address: list[str] = msgspec.field(default_factory=list)
    """Printed one line each."""
    operator_tax_id: str | None = None
    operator_email: str | None = None
    logo_path: str | None = None
    """A PNG or JPEG printed at the top of the PDF (relative paths: from the working directory)."""
    number_prefix: str = "BF"
    """Invoice numbers read ``<prefix>-<year>-<6 digits>``, gapless per prefix and year."""
    tax_rates: dict[str, Decimal] = msgspec.field(default_factory=dict)
    """Percent per currency (``{eur: 21}``): the tax contained in the gross total."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z0-9]{1,16}", self.number_prefix):
            raise ValueError("number_prefix must be 1 to 16 upper-case letters or digits")
        if not self.operator_name.strip():
            raise ValueError("operator_name must not be blank")
        for code, rate in self.tax_rates.items():
            if not rate.is_finite() or not 0 <= rate < 100:
                raise ValueError(f"tax_rates.{code} must be a percent from 0 up to (not including) 100")
            if rate != rate.quantize(Decimal("0.0001")):
                raise ValueError(f"tax_rates.{code} has more than 4 decimals")


class BillfoldConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    environment: Literal["development", "production"] = "development"
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    default_currency: str = "usd"
    currencies: dict[str, CurrencyConfig] = msgspec.field(default_factory=dict)
    channels: dict[str, ChannelConfig] = msgspec.field(default_factory=dict)
    auto_reload: AutoReloadDefaults = msgspec.field(default_factory=AutoReloadDefaults)
    plans: PlansConfig = msgspec.field(default_factory=PlansConfig)
    usage: UsageConfig = msgspec.field(default_factory=UsageConfig)
    portal: PortalConfig = msgspec.field(default_factory=PortalConfig)
    rate_limits: RateLimitsConfig = msgspec.field(default_factory=RateLimitsConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    holds: HoldsConfig = msgspec.field(default_factory=HoldsConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    worker: WorkerConfig = msgspec.field(default_factory=WorkerConfig)
    invoices: InvoicesConfig = msgspec.field(default_factory=InvoicesConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    plugins: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """Raw plugin sections; each is validated by its plugin's own schema (see billfold.plugins)."""

    def __post_init__(self) -> None:
        if not self.currencies:
            raise ValueError("at least one currency must be declared under `currencies`")
        if self.default_currency not in self.currencies:
            raise ValueError(f"default_currency `{self.default_currency}` is not declared under `currencies`")
        for code in self.invoices.tax_rates:
            if code not in self.currencies:
                raise ValueError(f"invoices.tax_rates.{code}: `{code}` is not declared under `currencies`")
        for name, channel in self.channels.items():
            prices = [("price", channel.price)] + [
                (f"message_types.{t}.price", m.price) for t, m in channel.message_types.items()
            ]
            for where, price in prices:
                if isinstance(price, dict) and set(price) != set(self.currencies):
                    missing = sorted(set(self.currencies) - set(price))
                    extra = sorted(set(price) - set(self.currencies))
                    raise ValueError(
                        f"channels.{name}.{where} must name every declared currency"
                        + (f" (missing {', '.join(missing)})" if missing else "")
                        + (f" (not declared: {', '.join(extra)})" if extra else "")
                    )

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def currency(self, code: str) -> CurrencyConfig:
        return self.currencies[code]
