"""Stripe payment provider for Billfold (distribution ``billfold-stripe``)."""

from __future__ import annotations

from billfold_stripe.config import StripeConfig
from billfold_stripe.provider import StripeProvider

__all__ = ["StripeConfig", "StripeProvider"]
