"""tier months and pins"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision = "tiers_0001"
down_revision = None
branch_labels = ("tiers",)


def upgrade() -> None:
    op.create_table(
        "tiers_months",
        sa.Column("org_id", GUID(length=16), primary_key=True),
        sa.Column("channel", sa.String(64), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("volume", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("downgrade_counter", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("pin_until", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
    )
    op.create_table(
        "tiers_pins",
        sa.Column("org_id", GUID(length=16), primary_key=True),
        sa.Column("channel", sa.String(64), primary_key=True),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("until", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("reason", sa.String(500), nullable=False, server_default=""),
        sa.Column("pinned_at", DateTimeUTC(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tiers_pins")
    op.drop_table("tiers_months")
