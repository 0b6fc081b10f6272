"""Request and response examples of the money-moving and paginated operations (for the OpenAPI
document: ``operation_class=examples.CHARGE`` on the route). The values are real answers of the
development server, ids shortened."""

from __future__ import annotations

from typing import Any

from billfold.api.openapi import documented, example

_ORG = "01a22a3d-eb54-76cd-8a04-694ba4fa2676"
_HOLD = "01a22a3d-eb98-73c7-8534-046557df2fd9"
_AT = "2026-11-30T02:17:10.794760Z"


def _transaction(
    entry_id: int, kind: str, amount: int, after: int, description: str, **extra: Any
) -> dict[str, Any]:
    return {
        "id": entry_id,
        "kind": kind,
        "description": description,
        "amount_cents": amount,
        "amount_usd": f"{amount / 100:.2f}",
        "currency": "usd",
        "balance_after_cents": after,
        "reserved_delta_cents": extra.pop("reserved_delta_cents", 0),
        "call_id": None,
        "phone_number_id": None,
        "phone_number_value": None,
        "hold_id": extra.pop("hold_id", None),
        "metadata": {},
        "created_at": _AT,
    }


def _balance(free: int, reserved: int = 0) -> dict[str, Any]:
    return {"free": free, "reserved": reserved, "total": free + reserved, "currency": "usd"}


CHARGE = documented(
    request=[
        example("A debit of $1.20", {"amount_cents": 120, "description": "sms"}),
        example(
            "With the call it pays for",
            {"amount_cents": 800, "description": "call", "call_id": "call_42", "metadata": {"agent": "a1"}},
        ),
    ],
    response={
        201: [
            example(
                "Charged",
                {"transaction": _transaction(2, "debit", -120, 4880, "sms"), "balance": _balance(4880)},
            )
        ]
    },
)

_HOLD_OUT = {
    "id": _HOLD,
    "amount_cents": 300,
    "captured_cents": None,
    "status": "pending",
    "description": "",
    "metadata": {},
    "expires_at": "2026-11-30T02:32:10.812021Z",
    "created_at": _AT,
    "finalized_at": None,
}

HOLD = documented(
    request=[
        example("Hold $3.00 for 15 minutes", {"amount_cents": 300, "expires_in_seconds": 900}),
    ],
    response={
        201: [
            example(
                "Held",
                {
                    "hold": _HOLD_OUT,
                    "balance": _balance(4580, 300),
                    "transaction": _transaction(
                        3, "hold", 0, 4580, "Hold", reserved_delta_cents=300, hold_id=_HOLD
                    ),
                },
            )
        ]
    },
)

CAPTURE = documented(
    request=[example("Capture part of the hold", {"amount_cents": 250})],
    response={
        200: [
            example(
                "Captured",
                {
                    "hold": {**_HOLD_OUT, "status": "captured", "captured_cents": 250, "finalized_at": _AT},
                    "balance": _balance(4630),
                    "transaction": _transaction(
                        4, "capture", -250, 4630, "Capture", reserved_delta_cents=-300, hold_id=_HOLD
                    ),
                },
            )
        ]
    },
    optional_body=True,
)

ADJUST = documented(
    request=[
        example("Credit $50.00", {"amount_cents": 5000, "description": "opening balance"}),
        example("Debit $5.00", {"amount_cents": -500, "description": "goodwill reversed"}),
    ],
    response={
        201: [
            example(
                "Credited",
                {
                    "transaction": _transaction(1, "adjustment", 5000, 5000, "opening balance"),
                    "balance": _balance(5000),
                },
            )
        ]
    },
)

REFUND = documented(
    request=[example("A $20.00 bank refund", {"amount_cents": 2000, "description": "refund by transfer"})],
)

TOP_UP = documented(
    request=[example("Top up $50.00", {"amount_cents": 5000})],
)

USAGE = documented(
    request=[
        example("One SMS", {"event_id": "evt_2026_0001", "channel": "sms", "quantity": 1}),
        example(
            "A call of 54 s",
            {"event_id": "evt_2026_0002", "channel": "call", "message_type": "pro", "quantity": 54},
        ),
    ],
)

TRANSACTIONS = documented(
    response={
        200: [
            example(
                "First page (limit=1): pass next_cursor as cursor for the next",
                {
                    "data": [_transaction(3, "debit", -120, 4880, "sms")],
                    "has_more": True,
                    "next_cursor": "3",
                    "limit": 1,
                    "offset": 0,
                    "total": 3,
                },
            ),
            example(
                "Last page",
                {"data": [], "has_more": False, "next_cursor": None, "limit": 50, "offset": 0, "total": 3},
            ),
        ]
    },
)
