"""Month close with invoices at scale, on PostgreSQL: N organizations, M usage entries, one close.

    uv run python bench/invoices_close.py                         # 10,000 orgs, 1,000,000 entries
    uv run python bench/invoices_close.py --orgs 100 --entries 10000   # a smoke run

What it does, on postgres@127.0.0.1:5432 (trust auth):
  1. creates a fresh database billfold_bench_invoices_<random> and migrates it;
  2. seeds, in bulk SQL (INSERT ... SELECT generate_series), N organizations created before the
     month before last, each with an account, an opening adjustment the day before that month, and
     M / N priced usage events in the month (sms, email and call in turn), each with the debit entry
     that charged it (``usage:<id>`` reference, running balances chained, the account row matching
     them, so `billfold ledger verify` holds);
  3. times `billfold month close --period <that month>` (the CLI, one small transaction per
     organization: month_closes row, account lock, hook, invoice aggregated in SQL and numbered);
  4. checks one invoice per organization, numbers 1..N without a gap, every invoice's total equal to
     its organization's debits, and `billfold ledger verify`; prints the timings as JSON; drops the
     database (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
FUNDING = 10_000_000

SEED_ORGS = """
INSERT INTO organizations (id, name, currency, creator, organization_type, status, created_at, updated_at)
SELECT gen_random_uuid(), 'bench org ' || g, 'usd', 'bench', 'paid', 'verified',
       $1::timestamptz, $1::timestamptz
  FROM generate_series(1, $2::int) AS g
"""
SEED_ACCOUNTS = """
INSERT INTO ledger_accounts (org_id, currency, free_cents, reserved_cents, overage_limit_cents,
                             watch_levels, entry_count, updated_at)
SELECT id, 'usd', $1::bigint - ($2::bigint + 7 * ($2::bigint / 3)), 0, 0, '[]'::jsonb, $2::bigint + 1,
       $3::timestamptz
  FROM organizations
"""
SEED_OPENING = """
INSERT INTO ledger_entries (org_id, kind, amount_cents, reserved_delta_cents, free_after_cents,
                            reserved_after_cents, description, metadata, created_at)
SELECT id, 'adjustment', $1::bigint, 0, $1::bigint, 0, 'opening balance', '{}'::jsonb, $2::timestamptz
  FROM organizations ORDER BY id
"""
SEED_USAGE = """
WITH planned AS (
    SELECT o.id AS org_id, g, gen_random_uuid() AS usage_id,
           CASE g % 3 WHEN 0 THEN 'call' WHEN 1 THEN 'sms' ELSE 'email' END AS channel,
           CASE g % 3 WHEN 0 THEN 8 ELSE 1 END AS amount,
           CASE g % 3 WHEN 0 THEN '8' WHEN 1 THEN '0.79' ELSE '1' END AS unit_price,
           $2::timestamptz + make_interval(secs => (g * 2000 % 2400000)::double precision) AS at
      FROM organizations o CROSS JOIN generate_series(1, $1::int) AS g
), entries AS (
    INSERT INTO ledger_entries (org_id, kind, amount_cents, reserved_delta_cents, free_after_cents,
                                reserved_after_cents, description, metadata, reference, created_at)
    SELECT org_id, 'debit', -amount, 0, $3::bigint - (g + 7 * (g / 3)), 0,
           'Usage: ' || channel, '{}'::jsonb, 'usage:' || usage_id, at
      FROM planned ORDER BY org_id, g
    RETURNING id, org_id, reference
)
INSERT INTO usage_events (id, org_id, event_id, request_hash, channel, quantity, billed_quantity,
                          unit_price, amount_cents, currency, status, entry_id, cycle_start, counted,
                          metadata, result, created_at)
SELECT p.usage_id, p.org_id, 'bench-' || p.g, '', p.channel, 1, 1, p.unit_price, p.amount, 'usd',
       'accepted', e.id, date_trunc('month', p.at)::date, '{}'::jsonb, '{}'::jsonb, '{}'::jsonb, p.at
  FROM planned p JOIN entries e ON e.org_id = p.org_id AND e.reference = 'usage:' || p.usage_id
"""


def month_before_last(now: datetime.datetime) -> tuple[str, datetime.datetime]:
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    previous = (first - datetime.timedelta(days=1)).replace(day=1)
    start = (previous - datetime.timedelta(days=1)).replace(day=1)
    return f"{start.year:04d}-{start.month:02d}", start


async def seed(dsn: str, orgs: int, per_org: int, start: datetime.datetime) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(SEED_ORGS, start - datetime.timedelta(days=30), orgs)
            await conn.execute(SEED_ACCOUNTS, FUNDING, per_org, start)
            await conn.execute(SEED_OPENING, FUNDING, start - datetime.timedelta(days=1))
            await conn.execute(SEED_USAGE, per_org, start, FUNDING)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - started


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BILLFOLD_DATABASE_URL": url,
        "BILLFOLD_CONFIG": str(ROOT / "config" / "billing.yaml"),
    }
    env.setdefault("BILLFOLD_ADMIN_API_KEY", "bench")
    return subprocess.run(
        ["uv", "run", "billfold", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


async def check(dsn: str, orgs: int) -> dict[str, object]:
    conn = await asyncpg.connect(dsn)
    try:
        count, owners, low, high = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT org_id), min(sequence), max(sequence) FROM invoices"
        )
        wrong = await conn.fetchval(
            """
            SELECT count(*) FROM invoices i
             WHERE i.total_cents <> (SELECT -sum(amount_cents) FROM ledger_entries e
                                      WHERE e.org_id = i.org_id AND e.kind = 'debit'
                                        AND e.created_at >= i.period_start AND e.created_at < i.period_end)
            """
        )
    finally:
        await conn.close()
    ok = count == owners == orgs and low == 1 and high == orgs and wrong == 0
    return {
        "invoices": count,
        "organizations": owners,
        "first": low,
        "last": high,
        "totals_off": wrong,
        "ok": ok,
    }


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orgs", type=int, default=10_000)
    parser.add_argument("--entries", type=int, default=1_000_000, help="usage entries in all")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--no-verify", action="store_true", help="skip `billfold ledger verify`")
    args = parser.parse_args()
    per_org = max(1, args.entries // args.orgs)
    period, start = month_before_last(datetime.datetime.now(datetime.UTC))
    database = f"billfold_bench_invoices_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"
    url = dsn.replace("postgresql://", "postgresql+asyncpg://")
    result: dict[str, object] = {"orgs": args.orgs, "usage_entries": per_org * args.orgs, "period": period}
    try:
        migrated = cli(url, "db", "upgrade")
        if migrated.returncode != 0:
            print(migrated.stderr, file=sys.stderr)
            return 1
        result["seed_seconds"] = round(await seed(dsn, args.orgs, per_org, start), 2)
        began = time.perf_counter()
        closed = cli(url, "month", "close", "--period", period, "--json")
        result["close_seconds"] = round(time.perf_counter() - began, 2)
        if closed.returncode != 0:
            print(closed.stderr, file=sys.stderr)
            return 1
        result["orgs_per_second"] = round(args.orgs / float(result["close_seconds"]), 1)  # type: ignore[arg-type]
        result["check"] = await check(dsn, args.orgs)
        if not args.no_verify:
            verified = cli(url, "ledger", "verify")
            result["ledger_verify"] = verified.stdout.strip() or verified.stderr.strip()[:500]
        print(json.dumps(result, indent=2))
        return 0 if result["check"]["ok"] else 1  # type: ignore[index]
    finally:
        if not args.keep:
            admin = await asyncpg.connect(ADMIN_DSN)
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
