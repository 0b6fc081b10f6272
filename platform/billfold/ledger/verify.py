"""Ledger invariants, checked by `billfold ledger verify` and by the tests."""

from __future__ import annotations

import msgspec
from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from billfold.db import table_of
from billfold.ledger.models import Account, Entry, Hold

accounts = table_of(Account)
entries = table_of(Entry)
holds = table_of(Hold)


class Violation(msgspec.Struct, frozen=True):
    check: str
    org_id: str | None
    detail: str


async def verify_ledger(conn: AsyncConnection) -> list[Violation]:
    """Return every broken invariant (empty when the ledger is sound).

    - each account's free/reserved equal the sums of its entries, and its entry count matches;
    - free never below -overage_limit, reserved never negative;
    - each entry's running balances chain from the previous entry of its organization;
    - a hold is finalized at most once: pending holds have only their hold entry, captured holds
      one capture (plus one release of the rest), released/expired holds one release;
    - a payment reference is booked at most once (also enforced by a unique index).
    """
    found: list[Violation] = []
    sums = (
        select(
            entries.c.org_id,
            func.coalesce(func.sum(entries.c.amount_cents), 0).label("total"),
            func.coalesce(func.sum(entries.c.reserved_delta_cents), 0).label("reserved"),
            func.count().label("n"),
        )
        .group_by(entries.c.org_id)
        .subquery()
    )
    rows = await conn.execute(
        select(
            accounts.c.org_id,
            accounts.c.free_cents,
            accounts.c.reserved_cents,
            accounts.c.overage_limit_cents,
            accounts.c.entry_count,
            func.coalesce(sums.c.total, 0),
            func.coalesce(sums.c.reserved, 0),
            func.coalesce(sums.c.n, 0),
        ).select_from(accounts.outerjoin(sums, sums.c.org_id == accounts.c.org_id))
    )
    for org_id, free, reserved, overage, count, total_sum, reserved_sum, n in rows:
        org = str(org_id)
        if free + reserved != total_sum:
            found.append(
                Violation(
                    "balance_equals_entries", org, f"free+reserved={free + reserved}, entries sum={total_sum}"
                )
            )
        if reserved != reserved_sum:
            found.append(
                Violation("reserved_equals_entries", org, f"reserved={reserved}, entries sum={reserved_sum}")
            )
        if count != n:
            found.append(Violation("entry_count", org, f"account says {count} entries, found {n}"))
        if free < -overage:
            found.append(Violation("free_not_below_limit", org, f"free={free} below -{overage}"))
        if reserved < 0:
            found.append(Violation("reserved_not_negative", org, f"reserved={reserved}"))

    previous = func.lag(entries.c.free_after_cents + entries.c.reserved_after_cents).over(
        partition_by=entries.c.org_id, order_by=entries.c.id
    )
    chain = select(
        entries.c.id,
        entries.c.org_id,
        (entries.c.free_after_cents + entries.c.reserved_after_cents).label("after"),
        entries.c.amount_cents,
        previous.label("before"),
    ).subquery()
    broken = await conn.execute(
        select(chain.c.id, chain.c.org_id)
        .where(func.coalesce(chain.c.before, 0) + chain.c.amount_cents != chain.c.after)
        .limit(100)
    )
    for entry_id, org_id in broken:
        found.append(
            Violation(
                "running_balance_chain", str(org_id), f"entry {entry_id} does not follow its predecessor"
            )
        )

    per_hold = (
        select(
            entries.c.hold_id,
            func.sum(case((entries.c.kind == "hold", 1), else_=0)).label("holds"),
            func.sum(case((entries.c.kind == "capture", 1), else_=0)).label("captures"),
            func.sum(case((entries.c.kind == "release", 1), else_=0)).label("releases"),
            func.sum(entries.c.reserved_delta_cents).label("reserved"),
        )
        .where(entries.c.hold_id.is_not(None))
        .group_by(entries.c.hold_id)
        .subquery()
    )
    hold_rows = await conn.execute(
        select(
            holds.c.id,
            holds.c.org_id,
            holds.c.status,
            holds.c.amount_cents,
            holds.c.captured_cents,
            func.coalesce(per_hold.c.holds, 0),
            func.coalesce(per_hold.c.captures, 0),
            func.coalesce(per_hold.c.releases, 0),
            func.coalesce(per_hold.c.reserved, 0),
        ).select_from(holds.outerjoin(per_hold, and_(per_hold.c.hold_id == holds.c.id)))
    )
    for hold_id, org_id, status, amount, captured, n_hold, n_capture, n_release, still_reserved in hold_rows:
        org = str(org_id)
        ok = n_hold == 1
        if status == "pending":
            ok = ok and n_capture == 0 and n_release == 0 and still_reserved == amount
        elif status == "captured":
            rest = amount - (captured or 0)
            ok = ok and n_capture == 1 and n_release == (1 if rest else 0) and still_reserved == 0
        else:  # released or expired
            ok = ok and n_capture == 0 and n_release == 1 and still_reserved == 0
        if not ok:
            found.append(
                Violation(
                    "hold_finalized_once",
                    org,
                    f"hold {hold_id} is {status} with {n_hold} hold, {n_capture} capture, "
                    f"{n_release} release entries",
                )
            )
    return found
