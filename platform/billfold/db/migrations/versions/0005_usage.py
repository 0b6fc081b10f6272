"""the usage domain: priced events, carried fractions, counters, plans, month closes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 23:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "usage_subscriber_months",
    "usage_sessions",
    "usage_plans",
    "usage_events",
    "usage_daily",
    "usage_counters",
    "usage_carry",
    "month_closes",
)


def upgrade() -> None:
    op.create_table(
        "month_closes",
        sa.Column("org_id", GUID(length=16), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("closed_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_month_closes_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "period", name=op.f("pk_month_closes")),
    )
    op.create_table(
        "usage_carry",
        sa.Column("org_id", GUID(length=16), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("exact_total", sa.String(length=80), nullable=False),
        sa.Column("charged_cents", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_usage_carry_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "channel", "currency", name=op.f("pk_usage_carry")),
    )
    op.create_table(
        "usage_counters",
        sa.Column("org_id", GUID(length=16), nullable=False),
        sa.Column("cycle_start", sa.Date(), nullable=False),
        sa.Column("counter", sa.String(length=80), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("warned", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_usage_counters_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "cycle_start", "counter", name=op.f("pk_usage_counters")),
    )
    op.create_table(
        "usage_daily",
        sa.Column("org_id", GUID(length=16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("message_type", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("billed_quantity", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_usage_daily_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "org_id", "day", "channel", "message_type", "category", name=op.f("pk_usage_daily")
        ),
    )
    op.create_table(
        "usage_events",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("org_id", GUID(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("message_type", sa.String(length=64), nullable=True),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("billed_quantity", sa.BigInteger(), nullable=False),
        sa.Column("unit_price", sa.String(length=40), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("hold_id", GUID(length=16), nullable=True),
        sa.Column("entry_id", sa.BigInteger(), nullable=True),
        sa.Column("cycle_start", sa.Date(), nullable=False),
        sa.Column("counted", JsonB, nullable=False),
        sa.Column("tier", JsonB, nullable=True),
        sa.Column("subscriber_id", sa.String(length=128), nullable=True),
        sa.Column("agent_id", sa.String(length=128), nullable=True),
        sa.Column("session_id", sa.String(length=128), nullable=True),
        sa.Column("call_id", sa.BigInteger(), nullable=True),
        sa.Column("phone_number_id", sa.BigInteger(), nullable=True),
        sa.Column("phone_number_value", sa.String(length=32), nullable=True),
        sa.Column("metadata", JsonB, nullable=False),
        sa.Column("result", JsonB, nullable=False),
        sa.Column("occurred_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("settled_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_usage_events_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_events")),
        sa.UniqueConstraint("org_id", "event_id", name="uq_usage_events_org_event"),
    )
    op.create_index("ix_usage_events_org_created", "usage_events", ["org_id", "created_at"], unique=False)
    op.create_index("ix_usage_events_status", "usage_events", ["status", "hold_id"], unique=False)
    op.create_table(
        "usage_plans",
        sa.Column("org_id", GUID(length=16), nullable=False),
        sa.Column("message_step", sa.String(length=64), nullable=False),
        sa.Column("budget_step", sa.String(length=64), nullable=False),
        sa.Column("anniversary", sa.Date(), nullable=False),
        sa.Column("allow_overage", sa.Boolean(), nullable=False),
        sa.Column("messages_cap", sa.BigInteger(), nullable=True),
        sa.Column("cost_cap", sa.BigInteger(), nullable=True),
        sa.Column("sms_cap", sa.BigInteger(), nullable=True),
        sa.Column("call_cap", sa.BigInteger(), nullable=True),
        sa.Column("pending_message_step", sa.String(length=64), nullable=True),
        sa.Column("pending_budget_step", sa.String(length=64), nullable=True),
        sa.Column("pending_effective", sa.Date(), nullable=True),
        sa.Column("no_cap_reminder_dismissed", sa.Boolean(), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_usage_plans_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_usage_plans")),
    )
    op.create_table(
        "usage_sessions",
        sa.Column("org_id", GUID(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("started_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_usage_sessions_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "session_id", name=op.f("pk_usage_sessions")),
    )
    op.create_table(
        "usage_subscriber_months",
        sa.Column("org_id", GUID(length=16), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("subscriber_id", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_usage_subscriber_months_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "org_id", "month", "agent_id", "subscriber_id", name=op.f("pk_usage_subscriber_months")
        ),
    )


def downgrade() -> None:
    op.drop_index("ix_usage_events_status", table_name="usage_events")
    op.drop_index("ix_usage_events_org_created", table_name="usage_events")
    for table in TABLES:
        op.drop_table(table)
