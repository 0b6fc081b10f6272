"""The ``plugins.stripe`` section of billing.yaml."""

from __future__ import annotations

import msgspec


class StripeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Stripe settings. Keep the keys out of the file: ``secret_key: ${STRIPE_SECRET_KEY}``.

    Attributes:
        enabled: Make Stripe the active payment provider (the built-in local provider otherwise).
        secret_key: The API secret key (``sk_live_...`` / ``sk_test_...``, or a restricted ``rk_...``).
        webhook_secret: The signing secret of the webhook endpoint (``whsec_...``).
        publishable_key: The publishable key (``pk_...``), handed to browsers for Stripe.js.
        api_base: Another API address (a local fake such as localstripe in tests); None for Stripe.
        max_network_retries: Retries of failed requests by the SDK (with idempotency keys).
        timeout_seconds: Timeout of one HTTP request to Stripe.
    """

    enabled: bool = False
    secret_key: str = ""
    webhook_secret: str = ""
    publishable_key: str = ""
    api_base: str | None = None
    max_network_retries: int = 0
    timeout_seconds: float = 20

    def __repr__(self) -> str:
        # Printed by logs and tracebacks: never the keys themselves.
        def hidden(value: str) -> str:
            return f"{value[:8]}…(redacted)" if value else "''"

        return (
            f"StripeConfig(enabled={self.enabled}, secret_key={hidden(self.secret_key)}, "
            f"webhook_secret={hidden(self.webhook_secret)}, publishable_key={self.publishable_key!r}, "
            f"api_base={self.api_base!r})"
        )

    def __post_init__(self) -> None:
        if self.max_network_retries < 0:
            raise ValueError("max_network_retries must be 0 or more")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be greater than 0")
        if self.api_base is not None and not self.api_base.startswith(("http://", "https://")):
            raise ValueError(f"api_base must be an http(s) URL, got {self.api_base!r}")
        if not self.enabled:
            return
        if not self.secret_key.strip():
            raise ValueError(
                "stripe is enabled but plugins.stripe.secret_key is empty; set STRIPE_SECRET_KEY"
            )
        if not self.webhook_secret.strip():
            raise ValueError(
                "stripe is enabled but plugins.stripe.webhook_secret is empty; set STRIPE_WEBHOOK_SECRET "
                "(the endpoint's signing secret, whsec_...), or Billfold cannot verify Stripe's webhooks"
            )
        if self.publishable_key.startswith(("sk_", "rk_")):
            raise ValueError("plugins.stripe.publishable_key holds a secret key; it must be a pk_... key")
