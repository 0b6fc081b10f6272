"""the invoices domain: billing details, number counters, invoices, lines, stored PDFs

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 02:30:00

Also indexes usage events by (organization, ledger entry): an invoice's usage lines join the
month's ledger entries to the events that made them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["org_id"], ["organizations.id"], name=op.f(f"fk_{table}_org_id_organizations"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "billing_details",
        sa.Column("org_id", GUID(length=16), nullable=False),
        sa.Column("legal_name", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=1000), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("vat_id", sa.String(length=32), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        _org_fk("billing_details"),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_billing_details")),
    )
    op.create_table(
        "invoice_counters",
        sa.Column("series", sa.String(length=16), nullable=False),
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("series", "year", name=op.f("pk_invoice_counters")),
    )
    op.create_table(
        "invoices",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("org_id", GUID(length=16), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("series", sa.String(length=16), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("period_start", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("period_end", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opening_cents", sa.BigInteger(), nullable=False),
        sa.Column("opening_reserved_cents", sa.BigInteger(), nullable=False),
        sa.Column("payments_cents", sa.BigInteger(), nullable=False),
        sa.Column("adjustments_cents", sa.BigInteger(), nullable=False),
        sa.Column("refunds_cents", sa.BigInteger(), nullable=False),
        sa.Column("closing_cents", sa.BigInteger(), nullable=False),
        sa.Column("closing_reserved_cents", sa.BigInteger(), nullable=False),
        sa.Column("subtotal_cents", sa.BigInteger(), nullable=False),
        sa.Column("tax_cents", sa.BigInteger(), nullable=False),
        sa.Column("total_cents", sa.BigInteger(), nullable=False),
        sa.Column("tax_rate", sa.String(length=16), nullable=False),
        sa.Column("statement", JsonB, nullable=False),
        sa.Column("customer", JsonB, nullable=False),
        sa.Column("operator", JsonB, nullable=False),
        sa.Column("issued_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("voided_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("void_reason", sa.String(length=500), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        _org_fk("invoices"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("number", name="uq_invoices_number"),
        sa.UniqueConstraint("series", "year", "sequence", name="uq_invoices_series_year_sequence"),
    )
    op.create_index("ix_invoices_org_id_id", "invoices", ["org_id", "id"], unique=False)
    op.create_index(
        "uq_invoices_org_period_finalized",
        "invoices",
        ["org_id", "period"],
        unique=True,
        sqlite_where=sa.text("status = 'finalized'"),
        postgresql_where=sa.text("status = 'finalized'"),
    )
    op.create_table(
        "invoice_lines",
        sa.Column("invoice_id", GUID(length=16), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=True),
        sa.Column("message_type", sa.String(length=64), nullable=True),
        sa.Column("unit", sa.String(length=32), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("unit_price", sa.String(length=40), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_lines_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("invoice_id", "position", name=op.f("pk_invoice_lines")),
    )
    op.create_table(
        "invoice_documents",
        sa.Column("invoice_id", GUID(length=16), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("rendered_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_documents_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("invoice_id", name=op.f("pk_invoice_documents")),
    )
    op.create_index("ix_usage_events_org_entry", "usage_events", ["org_id", "entry_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_usage_events_org_entry", table_name="usage_events")
    op.drop_table("invoice_documents")
    op.drop_table("invoice_lines")
    op.drop_index(
        "uq_invoices_org_period_finalized",
        table_name="invoices",
        sqlite_where=sa.text("status = 'finalized'"),
        postgresql_where=sa.text("status = 'finalized'"),
    )
    op.drop_index("ix_invoices_org_id_id", table_name="invoices")
    op.drop_table("invoices")
    op.drop_table("invoice_counters")
    op.drop_table("billing_details")
