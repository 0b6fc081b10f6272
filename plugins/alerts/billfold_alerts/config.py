"""The ``plugins.alerts`` section of billing.yaml."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import msgspec

Level = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=7 * 24 * 3600)]


class AlertsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Webhook endpoints and balance alerts.

    Attributes:
        enabled: Serve the webhook and alert routes, watch balances and deliver events.
        default_levels: The free-balance levels (minor units) a new organization watches.
        retry_schedule_seconds: The delay before each retry after a failed attempt (the first
            attempt is at once): 5 attempts by default, at once, ~1 min, ~5 min, ~1 h, ~24 h.
        jitter: Each delay is moved by up to this fraction either way (0.1 = ±10 %).
        timeout_seconds: A receiver must answer within this (connect, send and read).
        max_concurrency: Deliveries in flight at once in one worker process.
        max_per_endpoint: Of those, at most this many to one endpoint (a slow receiver never
            holds every slot).
        lease_seconds: A claimed delivery is due again after this when its worker died.
        poll_interval_seconds: How often the worker looks for due deliveries.
        max_retry_after_seconds: The longest ``Retry-After`` honoured on a 429 or 503.
        max_endpoints: Endpoints one organization may have.
        allowed_networks: Networks (CIDR) that endpoints may reach although they are private
            (e.g. a receiver inside the operator's own network); empty by default.
        ca_bundle: A PEM file of certificate authorities to trust for receivers (the system's
            default store when unset).
    """

    enabled: bool = False
    default_levels: list[Level] = msgspec.field(default_factory=list)
    retry_schedule_seconds: list[Seconds] = msgspec.field(default_factory=lambda: [60, 300, 3600, 86400])
    jitter: Annotated[float, msgspec.Meta(ge=0, le=0.5)] = 0.1
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5
    max_concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 32
    max_per_endpoint: Annotated[int, msgspec.Meta(ge=1, le=100)] = 4
    lease_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60
    poll_interval_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1
    max_retry_after_seconds: Seconds = 86400
    max_endpoints: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20
    allowed_networks: list[str] = msgspec.field(default_factory=list)
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        for network in self.allowed_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(
                    f"allowed_networks: {network!r} is not a network (e.g. 10.1.0.0/16)"
                ) from None
        if len(set(self.default_levels)) != len(self.default_levels):
            raise ValueError("default_levels must not repeat a level")
        if len(self.retry_schedule_seconds) > 20:
            raise ValueError("retry_schedule_seconds: at most 20 retries")
        if self.lease_seconds <= self.timeout_seconds:
            raise ValueError("lease_seconds must be longer than timeout_seconds")

    @property
    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.allowed_networks]
