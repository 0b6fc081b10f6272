"""billing email, spend cap, auto-reload retries, organization suspension

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 21:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch): SQLite adds them in place, without rebuilding the tables.
    op.add_column("billing_profiles", sa.Column("reload_retry_at", DateTimeUTC(timezone=True), nullable=True))
    op.add_column(
        "billing_profiles",
        sa.Column("reload_retried", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("billing_profiles", sa.Column("billing_email", sa.String(length=254), nullable=True))
    op.add_column("billing_profiles", sa.Column("usage_cap_cents", sa.BigInteger(), nullable=True))
    op.add_column("organizations", sa.Column("suspended_at", DateTimeUTC(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.drop_column("suspended_at")
    with op.batch_alter_table("billing_profiles", schema=None) as batch_op:
        batch_op.drop_column("usage_cap_cents")
        batch_op.drop_column("billing_email")
        batch_op.drop_column("reload_retried")
        batch_op.drop_column("reload_retry_at")
