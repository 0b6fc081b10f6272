"""Billfold hook implementations of the Stripe plugin (entry point ``stripe`` in group ``billfold``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from billfold import hookimpl
from billfold_stripe.config import StripeConfig

if TYPE_CHECKING:
    from billfold_stripe.provider import StripeProvider


@hookimpl
def billfold_config_schema() -> tuple[str, type[StripeConfig]]:
    """The ``plugins.stripe`` section of billing.yaml."""
    return ("stripe", StripeConfig)


@hookimpl(tryfirst=True)
def billfold_payment_provider(state: Any) -> StripeProvider | None:
    """Stripe is the payment provider when ``plugins.stripe.enabled`` is true; otherwise pass."""
    config: StripeConfig = state.plugin_config("stripe")
    if not config.enabled:
        return None
    # The Stripe SDK (and its HTTP clients) load only when Stripe is the provider: the command
    # line and a server without Stripe never pay for them.
    from billfold_stripe.provider import StripeProvider

    return StripeProvider(config)
