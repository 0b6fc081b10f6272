"""Query-parameter parsing shared by the list routes.

Each parameter is documented with a pattern (see the routes) and read with the same grammar,
matched whole (``re.fullmatch``: a JSON Schema pattern is ECMA-262, where ``$`` is the end of the
text; in Python it may also match before a final newline): what the document calls valid is
exactly what is accepted.
"""

from __future__ import annotations

import datetime
import re

from billfold.errors import ValidationFailed

_LEAP_YEAR = r"[12][0-9](?:0[48]|[2468][048]|[13579][26])|(?:12|16|20|24|28)00"
_DAY = (
    r"[12][0-9]{3}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    rf"|(?:{_LEAP_YEAR})-02-29"
)
_TIME = (
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+ -](?:[01][0-9]|2[0-3]):[0-5][0-9])?"
)
INSTANT = rf"(?:{_DAY})(?:{_TIME})?"
"""A calendar date (years 1000 to 2999) or a date-time: seconds, up to 6 decimals, and ``Z`` or an
offset (none: UTC). A ``+`` sent unencoded in a query string arrives as a space and is read as one."""
LIMIT = r"[1-9][0-9]?|1[0-9]{2}|200|"
"""A page size, 1 to 200 (empty: the default)."""
CURSOR = r"[0-9]{0,18}"
"""A cursor: an entry id as returned in ``next_cursor`` (empty: from the start)."""


def anchored(pattern: str) -> str:
    """The pattern as documented (JSON Schema patterns are not anchored by themselves)."""
    return f"^(?:{pattern})$"


def parse_instant(value: str | None, field: str, *, end_of_day: bool = False) -> datetime.datetime | None:
    """A date or date-time (:data:`INSTANT`) → aware UTC datetime. A bare date used as an upper
    bound means the whole day (up to its last microsecond)."""
    if value is None or value == "":
        return None
    if not re.fullmatch(INSTANT, value):
        raise ValidationFailed(
            f"{field} must be an ISO 8601 date or date-time (e.g. 2026-04-20 or 2026-04-20T18:25:06Z)",
            field=field,
        )
    text = value.replace("Z", "+00:00").replace(" ", "+")
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
    if not re.fullmatch(CURSOR, value):
        raise ValidationFailed(f"{field} is not a cursor returned by this API", field=field)
    return int(value)


def parse_limit(
    value: str | int | None, *, default: int = 50, maximum: int = 200, field: str = "limit"
) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, str) and not re.fullmatch(r"[1-9][0-9]{0,8}", value):
        raise ValidationFailed(f"{field} must be an integer between 1 and {maximum}", field=field)
    limit = int(value)
    if not 1 <= limit <= maximum:
        raise ValidationFailed(f"{field} must be between 1 and {maximum}", field=field)
    return limit
