"""Query-parameter parsing shared by the list routes."""

from __future__ import annotations

import datetime

from billfold.errors import ValidationFailed


def parse_instant(value: str | None, field: str, *, end_of_day: bool = False) -> datetime.datetime | None:
    """ISO 8601 date or date-time → aware UTC datetime. A bare date used as an upper bound means
    the whole day (up to its last microsecond)."""
    if value is None or value == "":
        return None
    text = value.strip().replace("Z", "+00:00").replace(" ", "+")
    try:
        if len(text) == 10:
            day = datetime.date.fromisoformat(text)
            moment = datetime.datetime.combine(day, datetime.time.max if end_of_day else datetime.time.min)
        else:
            moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(
            f"{field} must be an ISO 8601 date or date-time (e.g. 2026-04-20 or 2026-04-20T18:25:06Z)",
            field=field,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def parse_cursor(value: str | None, field: str = "cursor") -> int | None:
    if value is None or value == "":
        return None
    try:
        cursor = int(value)
    except ValueError:
        raise ValidationFailed(f"{field} is not a cursor returned by this API", field=field) from None
    if cursor < 0:
        raise ValidationFailed(f"{field} is not a cursor returned by this API", field=field)
    return cursor


def parse_limit(
    value: str | int | None, *, default: int = 50, maximum: int = 200, field: str = "limit"
) -> int:
    if value is None or value == "":
        return default
    try:
        limit = int(value)
    except ValueError:
        raise ValidationFailed(f"{field} must be an integer between 1 and {maximum}", field=field) from None
    if not 1 <= limit <= maximum:
        raise ValidationFailed(f"{field} must be between 1 and {maximum}", field=field)
    return limit
