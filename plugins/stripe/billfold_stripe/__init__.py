"""Stripe payment provider for Billfold (distribution ``billfold-stripe``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from billfold_stripe.config import StripeConfig

if TYPE_CHECKING:
    from billfold_stripe.provider import StripeProvider

__all__ = ["StripeConfig", "StripeProvider"]


def __getattr__(name: str) -> Any:
    # The provider (and the Stripe SDK) load on first use, not with the entry point.
    if name == "StripeProvider":
        from billfold_stripe.provider import StripeProvider

        return StripeProvider
    raise AttributeError(f"module 'billfold_stripe' has no attribute {name!r}")
