"""api key revocation notices (PostgreSQL)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 05:50:00

A trigger on api_keys sends the key's hash on the channel `billfold_api_keys` whenever a key is
revoked, re-pointed or deleted, whoever does it (a route, the CLI, hand-written SQL). Every serving
process listens there and forgets the key at once (billfold.orgs.revocations). SQLite has no
notifications: there a process's key cache is bounded by auth.key_cache_seconds instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION billfold_api_key_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('billfold_api_keys', OLD.key_hash);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER api_keys_notify_change
        AFTER UPDATE OF revoked_at, key_hash, org_id OR DELETE ON api_keys
        FOR EACH ROW EXECUTE FUNCTION billfold_api_key_changed()
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS api_keys_notify_change ON api_keys")
    op.execute("DROP FUNCTION IF EXISTS billfold_api_key_changed()")
