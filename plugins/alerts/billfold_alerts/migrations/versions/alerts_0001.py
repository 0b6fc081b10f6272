"""alerts: webhook endpoints, balance levels, deliveries"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic import op

revision = "alerts_0001"
down_revision = None
branch_labels = ("alerts",)


def _audit() -> list[sa.Column]:
    return [
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "alerts_endpoints",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("org_id", GUID(length=16), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("events", JsonB, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("disabled_reason", sa.String(64), nullable=True),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("secret", sa.String(120), nullable=False),
        sa.Column("previous_secret", sa.String(120), nullable=True),
        sa.Column("previous_secret_expires_at", DateTimeUTC(timezone=True), nullable=True),
        *_audit(),
        sa.PrimaryKeyConstraint("id", name="pk_alerts_endpoints"),
    )
    op.create_index("ix_alerts_endpoints_org_id", "alerts_endpoints", ["org_id"])
    op.create_table(
        "alerts_settings",
        sa.Column("org_id", GUID(length=16), nullable=False),
        sa.Column("thresholds", JsonB, nullable=False),
        sa.Column("fired", JsonB, nullable=False),
        sa.Column("depleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name="pk_alerts_settings"),
    )
    op.create_table(
        "alerts_deliveries",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("org_id", GUID(length=16), nullable=False),
        sa.Column("endpoint_id", GUID(length=16), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(100), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status_codes", JsonB, nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("next_attempt_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("delivered_at", DateTimeUTC(timezone=True), nullable=True),
        *_audit(),
        sa.PrimaryKeyConstraint("id", name="pk_alerts_deliveries"),
    )
    op.create_index("ix_alerts_deliveries_org_id", "alerts_deliveries", ["org_id"])
    op.create_index("ix_alerts_deliveries_endpoint_id", "alerts_deliveries", ["endpoint_id"])
    op.create_index("ix_alerts_deliveries_due", "alerts_deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("alerts_deliveries")
    op.drop_table("alerts_settings")
    op.drop_table("alerts_endpoints")
