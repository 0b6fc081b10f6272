"""Billing-account routes of documents 000, 001, 002 and 004 over one payment service."""

from __future__ import annotations

from litestar import Controller, get, patch, put

from billfold.api.auth import Tenant
from billfold.ledger.routes import TENANT_DEPENDENCIES, _minor_units
from billfold.payments.schemas import (
    AUTO_RELOAD_NAMES,
    CAMEL_NAMES,
    SNAKE_NAMES,
    AutoReload,
    AutoReloadPut,
    BillingAccount,
    BillingAccountPatch,
    OrganizationBilling,
    OrganizationBillingPatch,
    to_auto_reload,
    to_billing_account,
    to_organization_billing,
)
from billfold.state import AppState


async def _account(app_state: AppState, tenant: Tenant) -> BillingAccount:
    async with app_state.engine.connect() as conn:
        view = await app_state.payments.billing_view(conn, tenant.org_id)
    return to_billing_account(view, _minor_units(app_state, view.account.currency))


async def _patch_account(app_state: AppState, tenant: Tenant, data: BillingAccountPatch) -> BillingAccount:
    async with app_state.engine.begin() as conn:
        view = await app_state.payments.update_auto_reload(conn, tenant.org_id, data.change(), SNAKE_NAMES)
    return to_billing_account(view, _minor_units(app_state, view.account.currency))


class OrgBillingController(Controller):
    """Document 000: /v1/orgs/{org_id}/billing."""

    path = "/v1/orgs/{org_id:str}/billing"
    tags = ["billing"]
    dependencies = TENANT_DEPENDENCIES

    @get("/", operation_id="GetOrgBillingAccount")
    async def get_account(self, org_id: str, tenant: Tenant, app_state: AppState) -> BillingAccount:
        tenant.require(org_id)
        return await _account(app_state, tenant)

    @patch("/", operation_id="UpdateOrgBillingAccount")
    async def patch_account(
        self, org_id: str, data: BillingAccountPatch, tenant: Tenant, app_state: AppState
    ) -> BillingAccount:
        tenant.require(org_id)
        return await _patch_account(app_state, tenant, data)


class BillingController(Controller):
    """Document 001 (/v1/billing) and 004's auto-reload."""

    path = "/v1/billing"
    tags = ["billing"]
    dependencies = TENANT_DEPENDENCIES

    @get("/", operation_id="GetBillingAccount")
    async def get_account(self, tenant: Tenant, app_state: AppState) -> BillingAccount:
        return await _account(app_state, tenant)

    @patch("/", operation_id="UpdateBillingAccount")
    async def patch_account(self, data: BillingAccountPatch, tenant: Tenant, app_state: AppState) -> BillingAccount:
        return await _patch_account(app_state, tenant, data)

    @get("/auto-reload", operation_id="GetAutoReload")
    async def get_auto_reload(self, tenant: Tenant, app_state: AppState) -> AutoReload:
        async with app_state.engine.connect() as conn:
            return to_auto_reload(await app_state.payments.billing_view(conn, tenant.org_id))

    @put("/auto-reload", operation_id="PutAutoReload")
    async def put_auto_reload(self, data: AutoReloadPut, tenant: Tenant, app_state: AppState) -> AutoReload:
        async with app_state.engine.begin() as conn:
            view = await app_state.payments.update_auto_reload(conn, tenant.org_id, data.change(), AUTO_RELOAD_NAMES)
        return to_auto_reload(view)


class OrganizationBillingController(Controller):
    """Document 002: /v1/organizations/{organizationId}/billing."""

    path = "/v1/organizations/{organization_id:str}/billing"
    tags = ["billing"]
    dependencies = TENANT_DEPENDENCIES

    @get("/", operation_id="GetOrganizationBilling")
    async def get_billing(self, organization_id: str, tenant: Tenant, app_state: AppState) -> OrganizationBilling:
        org_id = tenant.require(organization_id)
        async with app_state.engine.connect() as conn:
            return to_organization_billing(await app_state.payments.billing_view(conn, org_id))

    @patch("/", operation_id="UpdateOrganizationBilling")
    async def patch_billing(
        self, organization_id: str, data: OrganizationBillingPatch, tenant: Tenant, app_state: AppState
    ) -> OrganizationBilling:
        org_id = tenant.require(organization_id)
        async with app_state.engine.begin() as conn:
            view = await app_state.payments.update_auto_reload(conn, org_id, data.change(), CAMEL_NAMES)
        return to_organization_billing(view)
