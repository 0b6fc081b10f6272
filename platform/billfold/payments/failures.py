"""How a payment provider's errors reach the caller."""

from __future__ import annotations

from billfold.errors import BillfoldError, PaymentRequired, ProviderRefused, ProviderUnavailable
from billfold.payments.provider import CardDeclined, ProviderError
from billfold.payments.provider import ProviderUnavailable as ProviderDown


def provider_failure(exc: ProviderError) -> BillfoldError:
    """Translate a provider error into the API's error: 402 for a decline, 502
    ``provider_unavailable`` for an outage (retry), 502 with the provider error's own code
    (``provider_misconfigured``, ``invalid_request``...) for a refusal that a retry will not cure."""
    if isinstance(exc, CardDeclined):
        return PaymentRequired(
            exc.message or "the card was declined",
            code="card_declined",
            fix="Use another payment method.",
            provider=exc.provider,
            provider_code=exc.provider_code,
        )
    if exc.retryable or isinstance(exc, ProviderDown):
        return ProviderUnavailable(
            exc.message or "the payment provider is unavailable",
            code="provider_unavailable",
            fix="Nothing was charged or credited; retry the same request (with the same Idempotency-Key).",
            provider=exc.provider,
            provider_code=exc.provider_code,
        )
    # The provider answered and said no: the same request will be refused again.
    misconfigured = exc.code == "provider_misconfigured"
    return ProviderRefused(
        exc.message or "the payment provider refused the request",
        code=exc.code or "provider_error",
        fix=(
            "Nothing was charged or credited. The operator must fix the payment provider's "
            "credentials or account; retrying will not help until then."
            if misconfigured
            else "Nothing was charged or credited; the provider refuses this request as sent, "
            "so retrying it unchanged will not help."
        ),
        provider=exc.provider,
        provider_code=exc.provider_code,
    )
