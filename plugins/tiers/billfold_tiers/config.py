"""The ``plugins.tiers`` section of billing.yaml: a ladder of volume steps per channel."""

from __future__ import annotations

from decimal import Decimal

import msgspec

Price = Decimal | dict[str, Decimal]
"""A unit price in minor units (fractions allowed): one number for every currency, or one per
currency (``{usd: 0.69, eur: 0.6}``), the same form as ``channels.<name>.price``."""

MAX_PRICE_DECIMALS = 8
MAX_UNIT_PRICE = Decimal(10**9)
MAX_THRESHOLD = 10**15


def _check_price(price: Price, where: str) -> None:
    for value in price.values() if isinstance(price, dict) else [price]:
        if not value.is_finite() or value < 0:
            raise ValueError(f"{where} must be a non-negative number")
        if value != value.quantize(Decimal(1).scaleb(-MAX_PRICE_DECIMALS)):
            raise ValueError(f"{where} has more than {MAX_PRICE_DECIMALS} decimals")
        if value > MAX_UNIT_PRICE:
            raise ValueError(f"{where} must not exceed {MAX_UNIT_PRICE}")


class Step(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A step above the first: from unit ``threshold + 1`` of a month, units cost ``price`` (or
    the price of their message type)."""

    name: str
    threshold: int
    price: Price | None = None
    message_types: dict[str, Price] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.strip() or len(self.name) > 64:
            raise ValueError("name must be 1 to 64 characters")
        if not 0 < self.threshold <= MAX_THRESHOLD:
            raise ValueError(f"threshold must be between 1 and {MAX_THRESHOLD}")
        if self.price is None and not self.message_types:
            raise ValueError("a step needs a price (or a price per message type)")
        if self.price is not None:
            _check_price(self.price, "price")
        for name, price in self.message_types.items():
            _check_price(price, f"message_types.{name}")

    def price_for(self, message_type: str | None, currency: str) -> Decimal | None:
        price = self.message_types.get(message_type, self.price) if message_type else self.price
        if price is None:
            return None
        return price.get(currency) if isinstance(price, dict) else price


class Ladder(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One channel's ladder. The first step (``base``) is priced by ``channels.<name>.price``."""

    steps: list[Step]
    base: str = "standard"
    volume_message_types: list[str] | None = None
    """Message types whose billed units count toward the month's volume (all when absent)."""

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a ladder needs at least one step above the base")
        names = [self.base, *(s.name for s in self.steps)]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must differ from each other and from base: {names}")
        thresholds = [s.threshold for s in self.steps]
        if thresholds != sorted(set(thresholds)):
            raise ValueError(f"thresholds must increase from step to step: {thresholds}")

    @property
    def names(self) -> list[str]:
        return [self.base, *(s.name for s in self.steps)]

    def index(self, name: str) -> int | None:
        """The position of a step (0 is the base), or None when the ladder has no such step."""
        if name == self.base:
            return 0
        for position, step in enumerate(self.steps, start=1):
            if step.name == name:
                return position
        return None

    def threshold(self, index: int) -> int:
        return 0 if index == 0 else self.steps[index - 1].threshold

    def for_volume(self, volume: int) -> int:
        """The highest step whose threshold the volume has reached."""
        reached = 0
        for position, step in enumerate(self.steps, start=1):
            if volume >= step.threshold:
                reached = position
        return reached

    def counts(self, message_type: str | None) -> bool:
        types = self.volume_message_types
        return types is None or message_type in types


class TiersConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Settings of the tiers plugin.

    Attributes:
        enabled: Switch tiers off: channel prices apply, the tier routes are 404.
        downgrade_after_months: Closed months in a row below the step's threshold before the
            organization moves down one step for the next month.
        channels: A ladder per channel name of ``channels``.
    """

    enabled: bool = True
    downgrade_after_months: int = 3
    channels: dict[str, Ladder] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.downgrade_after_months <= 120:
            raise ValueError("downgrade_after_months must be between 1 and 120")
