"""watched balance levels, the business clock, provider event outcomes, reload re-arm

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 20:00:00

The account's single watermark becomes the set of watched levels with the next level below and
above the free balance (``billfold_balance_crossed`` reports crossings either way); an existing
watermark becomes the account's one level.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_LEDGER_ACCOUNT_TYPES: tuple[sa.Column[object], ...] = (
    sa.Column(
        "org_id",
        GUID(length=16),
        sa.ForeignKey("organizations.id", ondelete="CASCADE", name="fk_ledger_accounts_org_id_organizations"),
        primary_key=True,
    ),
    sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
    sa.Column("watch_levels", JsonB, nullable=True),
)


def upgrade() -> None:
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("watch_levels", JsonB, nullable=True))
        batch_op.add_column(sa.Column("watch_below_cents", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("watch_above_cents", sa.BigInteger(), nullable=True))
    bind = op.get_bind()
    accounts = sa.table(
        "ledger_accounts",
        sa.column("org_id"),
        sa.column("free_cents", sa.BigInteger()),
        sa.column("watermark_cents", sa.BigInteger()),
        sa.column("watch_levels", JsonB),
        sa.column("watch_below_cents", sa.BigInteger()),
        sa.column("watch_above_cents", sa.BigInteger()),
    )
    bind.execute(sa.update(accounts).values(watch_levels=[]))
    watched = bind.execute(
        sa.select(accounts.c.org_id, accounts.c.free_cents, accounts.c.watermark_cents).where(
            accounts.c.watermark_cents.is_not(None)
        )
    ).all()
    for org_id, free, level in watched:
        bind.execute(
            sa.update(accounts)
            .where(accounts.c.org_id == org_id)
            .values(
                watch_levels=json.loads(json.dumps([level])),
                watch_below_cents=level if level <= free else None,
                watch_above_cents=level if level > free else None,
            )
        )
    # SQLite rebuilds the table here: keep the columns' own types, which reflection cannot see.
    with op.batch_alter_table("ledger_accounts", schema=None, reflect_args=_LEDGER_ACCOUNT_TYPES) as batch_op:
        batch_op.alter_column("watch_levels", existing_type=JsonB, nullable=False)
        batch_op.drop_column("watermark_cents")

    with op.batch_alter_table("billing_profiles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reload_rearm_cents", sa.BigInteger(), nullable=True))

    with op.batch_alter_table("provider_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("outcome", sa.String(length=32), nullable=False, server_default="applied")
        )

    op.create_table(
        "business_clock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("offset_microseconds", sa.BigInteger(), nullable=False),
        sa.Column("origin", sa.String(length=64), nullable=True),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_business_clock")),
    )


def downgrade() -> None:
    op.drop_table("business_clock")
    with op.batch_alter_table("provider_events", schema=None) as batch_op:
        batch_op.drop_column("outcome")
    with op.batch_alter_table("billing_profiles", schema=None) as batch_op:
        batch_op.drop_column("reload_rearm_cents")
    with op.batch_alter_table("ledger_accounts", schema=None, reflect_args=_LEDGER_ACCOUNT_TYPES) as batch_op:
        batch_op.add_column(sa.Column("watermark_cents", sa.BigInteger(), nullable=True))
        batch_op.drop_column("watch_above_cents")
        batch_op.drop_column("watch_below_cents")
        batch_op.drop_column("watch_levels")
