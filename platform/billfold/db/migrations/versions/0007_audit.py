"""the audit trail of operator actions, and named operator keys

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-30 02:40:00

``audit_events`` is append-only: a trigger refuses UPDATE and DELETE (on PostgreSQL and SQLite).
``operator_keys`` announces a revoked key on the channel of API keys (``billfold_api_keys``, with
the function of migration 0002), so every serving process forgets it at once on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False, start=1, increment=1),
            nullable=False,
        ),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("org_id", GUID(length=16), nullable=True),
        sa.Column("target", sa.String(length=200), nullable=True),
        sa.Column("before", JsonB, nullable=True),
        sa.Column("after", JsonB, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("tracking_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_org_id_id", ["org_id", "id"], unique=False)
        batch_op.create_index("ix_audit_events_action_id", ["action", "id"], unique=False)
        batch_op.create_index("ix_audit_events_actor_id", ["actor", "id"], unique=False)
        batch_op.create_index("ix_audit_events_created_at", ["created_at"], unique=False)

    op.create_table(
        "operator_keys",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=24), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_operator_keys_key_hash")),
    )
    with op.batch_alter_table("operator_keys", schema=None) as batch_op:
        batch_op.create_index(
            "uq_operator_keys_live_label",
            ["label"],
            unique=True,
            sqlite_where=sa.text("revoked_at IS NULL"),
            postgresql_where=sa.text("revoked_at IS NULL"),
        )

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION billfold_audit_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit_events is append-only';
            END
            $$
            """
        )
        op.execute(
            """
            CREATE TRIGGER audit_events_append_only
            BEFORE UPDATE OR DELETE ON audit_events
            FOR EACH ROW EXECUTE FUNCTION billfold_audit_append_only()
            """
        )
        op.execute(
            """
            CREATE TRIGGER operator_keys_notify_change
            AFTER UPDATE OF revoked_at, key_hash OR DELETE ON operator_keys
            FOR EACH ROW EXECUTE FUNCTION billfold_api_key_changed()
            """
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"""
                CREATE TRIGGER audit_events_no_{verb.lower()}
                BEFORE {verb} ON audit_events
                BEGIN
                    SELECT RAISE(ABORT, 'audit_events is append-only');
                END
                """
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS operator_keys_notify_change ON operator_keys")
        op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS billfold_audit_append_only()")
    with op.batch_alter_table("operator_keys", schema=None) as batch_op:
        batch_op.drop_index("uq_operator_keys_live_label")
    op.drop_table("operator_keys")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_created_at")
        batch_op.drop_index("ix_audit_events_actor_id")
        batch_op.drop_index("ix_audit_events_action_id")
        batch_op.drop_index("ix_audit_events_org_id_id")
    op.drop_table("audit_events")
