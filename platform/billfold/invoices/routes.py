"""Invoice routes: a tenant's invoices and billing details (document 004's shapes), the PDF with
the bearer key or a signed link, and the operator's list, void, re-render and details."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Annotated

from litestar import Controller, Response, get, post, put
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter

from billfold.api import family_004 as f004
from billfold.api.auth import OrgScope, TenantController, operator_guard
from billfold.api.openapi import responses
from billfold.audit.service import AuditActor
from billfold.config import CurrencyConfig
from billfold.errors import NotFound, ValidationFailed
from billfold.invoices.rows import InvoiceRow
from billfold.invoices.schemas import (
    AdminInvoiceOut,
    AdminInvoicePage,
    DetailsIn,
    DetailsOut,
    InvoiceOut,
    InvoicePage,
    RenderedOut,
    VoidIn,
    details_out,
    invoice_out,
)
from billfold.invoices.service import InvoiceService

Currencies = Mapping[str, CurrencyConfig]

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
PERIOD_PATTERN = r"^(?!0000)[0-9]{4}-(0[1-9]|1[0-2])$"
LIMIT = Annotated[int, QueryParameter(ge=1, le=100, description="1-100, default 20")]
CURSOR = Annotated[
    str | None,
    QueryParameter(max_length=36, pattern=UUID_PATTERN, description="`next_cursor` of the previous page"),
]

_PDF = {
    200: ResponseSpec(
        data_container=bytes,
        media_type="application/pdf",
        description="The invoice as PDF",
        generate_examples=False,
    )
}


INVOICE_ID = Annotated[str, PathParameter(max_length=36, description="An invoice id (a UUID)")]
"""Read as text and parsed here: a malformed id is this family's 404 (a typed path parameter would
be the router's own 404, in Billfold's envelope)."""


def _invoice_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("invoice not found", code="invoice_not_found", field="invoice_id") from None


def _cursor(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValidationFailed("cursor is not a cursor returned by this API", field="cursor") from None


def _units(currencies: Currencies, code: str) -> int:
    found = currencies.get(code)
    return found.minor_units if found else 2


def _out(invoices: InvoiceService, currencies: Currencies, invoice: InvoiceRow) -> InvoiceOut:
    return invoice_out(invoice, _units(currencies, invoice.currency), invoices.links.link(invoice.id))


def _admin_out(invoices: InvoiceService, currencies: Currencies, invoice: InvoiceRow) -> AdminInvoiceOut:
    out = invoice_out(
        invoice, _units(currencies, invoice.currency), invoices.links.link(invoice.id), admin=True
    )
    assert isinstance(out, AdminInvoiceOut)
    return out


def _pdf(invoice: InvoiceRow, document: bytes) -> Response[bytes]:
    return Response(
        document,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{invoice.number}.pdf"'},
    )


class InvoicesController(TenantController):
    path = "/v1/billing"
    tags = ["invoices (004)"]
    opt = f004.OPT

    @get(
        "/details",
        operation_id="GetBillingDetails",
        description=(
            "The organization's billing details (legal name, address, country, VAT id, email), copied into "
            "each invoice when it is finalized."
        ),
        summary="The organization's billing details (copied into each invoice when it is finalized)",
        responses=responses(404, family="004"),
    )
    async def get_details(
        self, org: NamedDependency[OrgScope], invoices: NamedDependency[InvoiceService]
    ) -> DetailsOut:
        return details_out(await invoices.details(org.org_id))

    @put(
        "/details",
        operation_id="SetBillingDetails",
        description=(
            "Replace the billing details; invoices already finalized keep the details they were cut with."
        ),
        summary="Replace the billing details (finalized invoices keep the ones they were cut with)",
        responses=responses(404, body=True, family="004"),
    )
    async def set_details(
        self,
        data: JSONBody[DetailsIn],
        org: NamedDependency[OrgScope],
        invoices: NamedDependency[InvoiceService],
    ) -> DetailsOut:
        return details_out(await invoices.set_details(org.org_id, data))

    @get(
        "/invoices",
        operation_id="ListInvoices",
        description=(
            "Monthly invoices in document 004's units, newest first, cursor paged (`{items, next_cursor, "
            "has_more}`); `pdf_url` downloads the PDF with the same key."
        ),
        summary="Monthly invoices, newest first, cursor paged",
        responses=responses(404, family="004"),
    )
    async def list_invoices(
        self,
        org: NamedDependency[OrgScope],
        invoices: NamedDependency[InvoiceService],
        currencies: NamedDependency[Currencies],
        limit: LIMIT = 20,
        cursor: CURSOR = None,
    ) -> InvoicePage:
        page, next_cursor = await invoices.list(org_id=org.org_id, limit=limit, cursor=_cursor(cursor))
        return InvoicePage(
            items=[_out(invoices, currencies, i) for i in page],
            next_cursor=str(next_cursor) if next_cursor else None,
            has_more=next_cursor is not None,
        )

    @get(
        "/invoices/{invoice_id:str}",
        operation_id="GetInvoice",
        description=(
            "One invoice with its lines (channel, message type, unit price, quantity, amount), tax, totals "
            "and the balance statement; another organization's is 404."
        ),
        summary="One invoice",
        responses=responses(404, family="004"),
    )
    async def get_invoice(
        self,
        invoice_id: INVOICE_ID,
        org: NamedDependency[OrgScope],
        invoices: NamedDependency[InvoiceService],
        currencies: NamedDependency[Currencies],
    ) -> InvoiceOut:
        return _out(invoices, currencies, await invoices.get(_invoice_id(invoice_id), org_id=org.org_id))

    @get(
        "/invoices/{invoice_id:str}/pdf",
        operation_id="GetInvoicePdf",
        description=(
            "The invoice as a PDF (application/pdf); `?link=true` answers a signed link valid for 15 minutes"
            " instead, for a browser."
        ),
        summary="The invoice as PDF",
        media_type="application/pdf",
        responses={**responses(404, family="004"), **_PDF},
    )
    async def get_pdf(
        self,
        invoice_id: INVOICE_ID,
        org: NamedDependency[OrgScope],
        invoices: NamedDependency[InvoiceService],
    ) -> Response[bytes]:
        invoice, document = await invoices.pdf(_invoice_id(invoice_id), org_id=org.org_id)
        return _pdf(invoice, document)


@get(
    "/v1/billing/invoices/{invoice_id:str}/pdf/signed",
    operation_id="GetInvoicePdfSigned",
    summary="The invoice as PDF through a signed link (no key: for a browser; valid 15 minutes)",
    description="The link is an invoice's `pdf_link`. A forged or expired link is 403.",
    tags=["invoices (004)"],
    opt=f004.OPT,
    security=[{}],
    media_type="application/pdf",
    responses={**responses(403, 404, public=True, family="004"), **_PDF},
)
async def get_signed_pdf(
    invoice_id: INVOICE_ID,
    invoices: NamedDependency[InvoiceService],
    expires: Annotated[int, QueryParameter(ge=0, le=2**40, description="Unix seconds")],
    signature: Annotated[str, QueryParameter(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")],
) -> Response[bytes]:
    found = _invoice_id(invoice_id)
    invoices.links.check(found, expires, signature)
    invoice, document = await invoices.pdf(found)
    return _pdf(invoice, document)


class AdminInvoicesController(Controller):
    path = "/v1/admin"
    tags = ["operator"]
    guards = [operator_guard]

    @get(
        "/invoices",
        operation_id="AdminListInvoices",
        description=("Invoices of every organization, or of `org_id`, newest first, cursor paged."),
        summary="Invoices of every organization (or one), newest first, cursor paged",
        responses=responses(),
    )
    async def list_invoices(
        self,
        invoices: NamedDependency[InvoiceService],
        currencies: NamedDependency[Currencies],
        org_id: Annotated[
            uuid.UUID | None, QueryParameter(description="Only this organization's invoices")
        ] = None,
        period: Annotated[str | None, QueryParameter(pattern=PERIOD_PATTERN, description="YYYY-MM")] = None,
        limit: LIMIT = 20,
        cursor: CURSOR = None,
    ) -> AdminInvoicePage:
        page, next_cursor = await invoices.list(
            org_id=org_id, limit=limit, cursor=_cursor(cursor), period=period
        )
        return AdminInvoicePage(
            items=[_admin_out(invoices, currencies, i) for i in page],
            next_cursor=str(next_cursor) if next_cursor else None,
            has_more=next_cursor is not None,
        )

    @get(
        "/invoices/{invoice_id:uuid}",
        operation_id="AdminGetInvoice",
        description=("One invoice of any organization, with its number, lines, totals and status."),
        summary="One invoice of any organization",
        responses=responses(404),
    )
    async def get_invoice(
        self,
        invoice_id: FromPath[uuid.UUID],
        invoices: NamedDependency[InvoiceService],
        currencies: NamedDependency[Currencies],
    ) -> AdminInvoiceOut:
        return _admin_out(invoices, currencies, await invoices.get(invoice_id))

    @post(
        "/invoices/{invoice_id:uuid}/void",
        operation_id="AdminVoidInvoice",
        description=(
            "Void a finalized invoice with a required reason: its number stays taken and an audit row is "
            "written; reissue it with `billfold month close --period P --org ID --reissue`."
        ),
        summary="Void a finalized invoice, with a reason (its number stays taken; reissue with "
        "`billfold month close --period P --org ID --reissue`)",
        status_code=200,
        responses=responses(404, 409, body=True),
    )
    async def void(
        self,
        invoice_id: FromPath[uuid.UUID],
        data: JSONBody[VoidIn],
        invoices: NamedDependency[InvoiceService],
        currencies: NamedDependency[Currencies],
        audit_actor: NamedDependency[AuditActor],
    ) -> AdminInvoiceOut:
        voided = await invoices.void(invoice_id, data.reason, actor=audit_actor)
        return _admin_out(invoices, currencies, voided)

    @post(
        "/invoices/{invoice_id:uuid}/render",
        operation_id="AdminRenderInvoicePdf",
        description=(
            "Render the invoice's PDF again and store it (after a logo or layout change); the invoice's "
            "figures never change."
        ),
        summary="Render an invoice's PDF again and keep it (after a logo or template change)",
        status_code=200,
        responses=responses(404),
    )
    async def render(
        self, invoice_id: FromPath[uuid.UUID], invoices: NamedDependency[InvoiceService]
    ) -> RenderedOut:
        invoice, document = await invoices.rerender(invoice_id)
        return RenderedOut(
            invoice_id=invoice.id,
            number=invoice.number,
            bytes=len(document),
            sha256=hashlib.sha256(document).hexdigest(),
        )

    @get(
        "/organizations/{org_id:uuid}/billing-details",
        operation_id="AdminGetBillingDetails",
        description=("An organization's billing details, as its tenant sees them."),
        summary="An organization's billing details",
        responses=responses(404),
    )
    async def get_details(
        self, org_id: FromPath[uuid.UUID], invoices: NamedDependency[InvoiceService]
    ) -> DetailsOut:
        return details_out(await invoices.details(org_id))

    @put(
        "/organizations/{org_id:uuid}/billing-details",
        operation_id="AdminSetBillingDetails",
        description=("Replace an organization's billing details (used by invoices finalized from now on)."),
        summary="Replace an organization's billing details",
        responses=responses(404, body=True),
    )
    async def set_details(
        self,
        org_id: FromPath[uuid.UUID],
        data: JSONBody[DetailsIn],
        invoices: NamedDependency[InvoiceService],
    ) -> DetailsOut:
        return details_out(await invoices.set_details(org_id, data))


INVOICE_ROUTES: list[type[Controller] | HTTPRouteHandler] = [
    InvoicesController,
    get_signed_pdf,
    AdminInvoicesController,
]
