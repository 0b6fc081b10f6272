"""The event catalog, the envelope every event is sent in, and the ``data`` of each event.

Amounts follow document 004: major units as JSON numbers with upper-case currency codes, and the
exact integer minor units beside them (``amount`` and ``amount_cents``; a balance's ``free`` and
``free_cents``)."""

from __future__ import annotations

import datetime
import secrets
import uuid
from typing import Any

import msgspec

from billfold import AccountRow, now

API_VERSION = "2026-01-01"

BALANCE_LOW = "billing.balance_low"
BALANCE_RECOVERED = "billing.balance_recovered"
BALANCE_DEPLETED = "billing.balance_depleted"
BALANCE_EVENTS = (BALANCE_LOW, BALANCE_RECOVERED, BALANCE_DEPLETED)
DOMAIN_EVENTS = (
    "payment.succeeded",
    "payment.failed",
    "auto_reload.succeeded",
    "auto_reload.failed",
    "auto_reload.requires_action",
    "auto_reload.paused",
    "auto_reload.limit_reached",
    "usage.cap_warning",
    "usage.cap_exceeded",
    "tier.changed",
    "invoice.finalized",
)
"""Domain events (``billfold_domain_event``) forwarded to the endpoints that subscribe to them."""
CATALOG = (*BALANCE_EVENTS, *DOMAIN_EVENTS)
EVERYTHING = "*"
TEST_EVENT = "webhook.test"
"""Sent by POST /v1/webhooks/{id}/test to that endpoint only (no subscription needed)."""

DEPLETED_LEVEL = 1
"""Watched for ``billing.balance_depleted``: a move below 1 minor unit is free reaching 0 or below."""


def new_event_id() -> str:
    return "evt_" + uuid.UUID(bytes=secrets.token_bytes(16)).hex


def subscribed(events: list[str], event: str) -> bool:
    return event in events or EVERYTHING in events


def major(cents: int, minor_units: int) -> float:
    return cents / 10**minor_units if minor_units else float(cents)


def envelope(event_id: str, event: str, org_id: uuid.UUID, data: dict[str, Any]) -> bytes:
    """The body sent to every endpoint, identical on every attempt."""
    moment: datetime.datetime = now()
    return msgspec.json.encode(
        {
            "id": event_id,
            "event": event,
            "timestamp": moment.isoformat().replace("+00:00", "Z"),
            "api_version": API_VERSION,
            "organization_id": str(org_id),
            "data": data,
        }
    )


def balance_data(account: AccountRow, threshold_cents: int, minor_units: int) -> dict[str, Any]:
    total = account.free_cents + account.reserved_cents
    return {
        "balance": {
            "free": major(account.free_cents, minor_units),
            "reserved": major(account.reserved_cents, minor_units),
            "total": major(total, minor_units),
            "free_cents": account.free_cents,
            "reserved_cents": account.reserved_cents,
            "total_cents": total,
        },
        "threshold": major(threshold_cents, minor_units),
        "threshold_cents": threshold_cents,
        "currency": account.currency.upper(),
    }


MONEY_CAPS = frozenset({"cost", "sms", "call", "spend"})
"""Caps counted in money (minor units); ``messages`` counts messages."""


def domain_data(event: str, payload: dict[str, Any], currency: str, minor_units: int) -> dict[str, Any]:
    """A core event's payload in 004's units: every ``*_cents`` integer gets its major-unit twin,
    the currency is upper-case; caps add ``percent``; auto-reload outcomes add ``attempt``."""
    data: dict[str, Any] = {}
    for key, value in payload.items():
        if key.endswith("_cents") and isinstance(value, int) and not isinstance(value, bool):
            data[key.removesuffix("_cents")] = major(value, minor_units)
            data[key] = value
        elif key == "currency" and isinstance(value, str):
            data[key] = value.upper()
        else:
            data[key] = value
    if event.startswith("usage.cap_"):
        data["percent"] = payload.get("percentage")
        if payload.get("cap") in MONEY_CAPS:
            for key in ("used", "limit"):
                if isinstance(payload.get(key), int):
                    data[f"{key}_cents"] = payload[key]
                    data[key] = major(payload[key], minor_units)
            data["unit"] = "money"
        else:
            data["unit"] = "message"
    if event.startswith("auto_reload.") and "consecutive_failures" in payload:
        data["attempt"] = payload["consecutive_failures"]
    data.setdefault("currency", currency.upper())
    return data
