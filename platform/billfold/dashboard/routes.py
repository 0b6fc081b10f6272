"""The dashboard's pages: sign-in and sign-out, the organizations list, one organization, and the
actions (form → review → confirm). Mounted at /dashboard by the composition root, outside the
OpenAPI document, behind its own session and CSRF middleware (the JSON API has neither)."""

from __future__ import annotations

import datetime
import logging
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, Request, Response, Router, get, post
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router

from billfold.clock import now
from billfold.dashboard import charts, queries
from billfold.dashboard.actions import (
    Context,
    FormAction,
    check_reason,
    core_actions,
    find_plugin_action,
    form_values,
    plugin_panels,
)
from billfold.dashboard.render import SECURITY_HEADERS, STATIC, error_page, render_panel
from billfold.dashboard.security import (
    FLASH_CHARACTERS,
    LABEL_KEY,
    OPERATORS_STATE_KEY,
    Operators,
    SignInRequired,
    csrf_config,
    dashboard_actor,
    dashboard_guard,
    session_config,
    signed_in,
)
from billfold.errors import BillfoldError, ValidationFailed

if TYPE_CHECKING:
    from billfold.api.app import Billfold

logger = logging.getLogger("billfold.dashboard")

BILLFOLD_STATE_KEY = "billfold_dashboard"
READS_STATE_KEY = "billfold_dashboard_reads"


def _billfold(request: Request[Any, Any, Any]) -> Billfold:
    billfold: Billfold = request.app.state[BILLFOLD_STATE_KEY]
    return billfold


def _reads(request: Request[Any, Any, Any]) -> queries.DashboardReads:
    reads: queries.DashboardReads = request.app.state[READS_STATE_KEY]
    return reads


def _minor_units(billfold: Billfold, currency: str) -> int:
    found = billfold.config.currencies.get(currency)
    return found.minor_units if found is not None else 2


def _page(request: Request[Any, Any, Any], name: str, status_code: int = 200, **context: Any) -> Template:
    session = request.scope.get("session")
    flash = session.pop("flash", None) if isinstance(session, dict) else None
    return Template(
        template_name=name,
        context={
            "operator": request.scope.get("state", {}).get(LABEL_KEY),
            "flash": flash,
            "path": request.url.path,
            **context,
        },
        status_code=status_code,
    )


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/dashboard/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/dashboard/organizations"


# -- sign-in ------------------------------------------------------------------------------------------


class SignIn(Controller):
    path = "/"

    @get("/", sync_to_thread=False)
    def home(self) -> Redirect:
        return Redirect("/dashboard/organizations")

    @get("/sign-in")
    async def form(
        self,
        request: Request[Any, Any, Any],
        next_: Annotated[str | None, QueryParameter(name="next")] = None,
    ) -> Template | Redirect:
        if await signed_in(request):
            return Redirect(_safe_next(next_))
        return _page(request, "sign_in.html", next=_safe_next(next_), error=None)

    @post("/sign-in")
    async def sign_in(self, request: Request[Any, Any, Any]) -> Template | Redirect:
        form = await request.form()
        key = form.get("key", "")
        next_ = _safe_next(form.get("next"))
        operators: Operators = request.app.state[OPERATORS_STATE_KEY]
        session = await operators.sign_in(key if isinstance(key, str) else "")
        if session is None:
            request.clear_session()
            return _page(request, "sign_in.html", 401, next=next_, error="That is not an operator key.")
        request.set_session(session)
        return Redirect(next_)

    @post("/sign-out")
    async def sign_out(self, request: Request[Any, Any, Any]) -> Redirect:
        request.clear_session()
        return Redirect("/dashboard/sign-in")


# -- pages ----------------------------------------------------------------------------------------------


class Pages(Controller):
    path = "/organizations"
    guards = [dashboard_guard]

    @get("/")
    async def organizations(
        self,
        request: Request[Any, Any, Any],
        q: Annotated[str, QueryParameter(max_length=200)] = "",
        sort: Annotated[str, QueryParameter(pattern="^(name|created|balance|status)$")] = "created",
        order: Annotated[str, QueryParameter(pattern="^(asc|desc)$")] = "desc",
        page: Annotated[int, QueryParameter(ge=1, le=100_000)] = 1,
    ) -> Template:
        billfold = _billfold(request)
        rows, total = await _reads(request).organizations(
            search=q.strip(), sort=sort, descending=order == "desc", page=page
        )
        pages = max(1, -(-total // queries.PAGE_SIZE))
        return _page(
            request,
            "organizations.html",
            rows=rows,
            total=total,
            q=q,
            sort=sort,
            order=order,
            page=page,
            pages=pages,
            minor={code: c.minor_units for code, c in billfold.config.currencies.items()},
        )

    @get("/{org_id:uuid}")
    async def organization(
        self,
        request: Request[Any, Any, Any],
        org_id: FromPath[uuid.UUID],
        days: Annotated[int, QueryParameter(ge=1, le=90, description="30 or 90")] = 30,
    ) -> Template:
        billfold = _billfold(request)
        days = 90 if days > 30 else 30
        org = await billfold.orgs.get(org_id)
        units = _minor_units(billfold, org.currency)
        today = now().date()
        first = today - datetime.timedelta(days=days - 1)
        read = await _reads(request).organization(org_id, first, today)
        account, free, usage = read["account"], read["free"], read["usage"]
        plan = await billfold.plan_service.get(org_id, org.created_at)
        invoices = await _invoices(billfold, org_id)
        audit = await billfold.audit.page(org_id=org_id, limit=20)
        panels = await plugin_panels(billfold, org_id)
        day_list = charts.days_of(first, today)
        return _page(
            request,
            "organization.html",
            org=org,
            units=units,
            account=account,
            days=days,
            free_chart=charts.line_chart(f"Free balance, last {days} days", free, minor_units=units),
            usage_chart=charts.bar_chart(
                f"Daily usage per channel, last {days} days", usage, day_list, minor_units=units
            ),
            usage_series=usage,
            entries=read["entries"],
            holds=read["holds"],
            methods=read["methods"],
            profile=read["profile"],
            reload_state=queries.auto_reload_state(read["profile"]),
            failures=read["failures"],
            keys=read["keys"],
            plan=plan,
            invoices=invoices,
            audit=audit.items,
            panels=[render_panel(request, item) for item in panels],
            actions=core_actions(billfold),
        )

    @get("/{org_id:uuid}/actions/{name:str}")
    async def action_form(
        self, request: Request[Any, Any, Any], org_id: FromPath[uuid.UUID], name: FromPath[str]
    ) -> Template:
        return await _action_page(request, org_id, name, None, stage="form")

    @post("/{org_id:uuid}/actions/{name:str}")
    async def action(
        self, request: Request[Any, Any, Any], org_id: FromPath[uuid.UUID], name: FromPath[str]
    ) -> Template | Redirect:
        return await _submit(request, org_id, name, None)

    @get("/{org_id:uuid}/panels/{plugin:str}/{name:str}")
    async def panel_form(
        self,
        request: Request[Any, Any, Any],
        org_id: FromPath[uuid.UUID],
        plugin: FromPath[str],
        name: FromPath[str],
    ) -> Template:
        return await _action_page(request, org_id, name, plugin, stage="form")

    @post("/{org_id:uuid}/panels/{plugin:str}/{name:str}")
    async def panel_action(
        self,
        request: Request[Any, Any, Any],
        org_id: FromPath[uuid.UUID],
        plugin: FromPath[str],
        name: FromPath[str],
    ) -> Template | Redirect:
        return await _submit(request, org_id, name, plugin)


async def _invoices(billfold: Billfold, org_id: uuid.UUID) -> list[dict[str, Any]]:
    """The latest invoices with a signed PDF link (none when the invoices domain is absent)."""
    service = getattr(billfold, "invoices", None)
    if service is None:
        return []
    rows, _ = await service.list(org_id=org_id, limit=12)
    return [{"row": row, "pdf": service.links.link(row.id)[0]} for row in rows]


async def _find(
    request: Request[Any, Any, Any], org_id: uuid.UUID, name: str, plugin: str | None
) -> tuple[FormAction, Context]:
    billfold = _billfold(request)
    org = await billfold.orgs.get(org_id)
    ctx = Context(
        org=org,
        minor_units=_minor_units(billfold, org.currency),
        free_cents=await _reads(request).free_cents(org_id),
    )
    found = (
        core_actions(billfold).get(name)
        if plugin is None
        else await find_plugin_action(billfold, org_id, plugin, name)
    )
    if found is None:
        raise HTTPException(status_code=404, detail=f"no action {name!r} here")
    return found, ctx


async def _action_page(
    request: Request[Any, Any, Any],
    org_id: uuid.UUID,
    name: str,
    plugin: str | None,
    *,
    stage: str,
    values: dict[str, str] | None = None,
    reason: str = "",
    summary: str | None = None,
    error: BillfoldError | None = None,
    status_code: int = 200,
) -> Template:
    action, ctx = await _find(request, org_id, name, plugin)
    if values is None:
        values = {f.name: request.query_params.get(f.name) or f.default for f in action.fields}
    return _page(
        request,
        "action.html",
        status_code,
        org=ctx.org,
        action=action,
        values=values,
        reason=reason,
        stage=stage,
        summary=summary,
        error=error,
        target=request.url.path,
    )


async def _submit(
    request: Request[Any, Any, Any], org_id: uuid.UUID, name: str, plugin: str | None
) -> Template | Redirect:
    action, ctx = await _find(request, org_id, name, plugin)
    form = await request.form()
    stage = form.get("stage", "review")
    raw_reason = form.get("reason", "")
    reason = raw_reason if isinstance(raw_reason, str) else ""
    values: dict[str, str] = {}
    try:
        values = form_values(form, action.fields)
        reason = check_reason(reason)
        summary = action.review(values, ctx)
        if stage != "confirm":
            return await _action_page(
                request, org_id, name, plugin, stage="confirm", values=values, reason=reason, summary=summary
            )
        message = await action.perform(dashboard_actor(request), values, reason, ctx)
    except BillfoldError as exc:
        return await _action_page(
            request,
            org_id,
            name,
            plugin,
            stage="form",
            values=values,
            reason=reason,
            error=exc,
            status_code=exc.status_code,
        )
    request.session["flash"] = message[:FLASH_CHARACTERS]
    return Redirect(f"/dashboard/organizations/{org_id}")


# -- errors as pages ------------------------------------------------------------------------------------


def _sign_in_required(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
    target = request.url.path if request.method == "GET" else "/dashboard/organizations"
    return Redirect(f"/dashboard/sign-in?next={target}")


def _forbidden(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return error_page(
        request,
        403,
        "Refused",
        "This form was refused: its security token is missing or out of date. Go back, reload the "
        "page and submit it again.",
    )


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    titles = {400: "Bad request", 404: "Not found", 405: "Not allowed"}
    status = exc.status_code if 400 <= exc.status_code < 600 else 400
    return error_page(request, status, titles.get(status, "Error"), str(exc.detail))


def _billfold_error(request: Request[Any, Any, Any], exc: BillfoldError) -> Response[Any]:
    return error_page(
        request, exc.status_code, "Not found" if exc.status_code == 404 else "Error", exc.message
    )


# -- mounting -------------------------------------------------------------------------------------------


def dashboard_routers(billfold: Billfold) -> tuple[list[Any], dict[str, Any]]:
    """The dashboard's routers and the app state they read (no store: the session is in its
    cookie)."""
    import os

    production = billfold.config.is_production
    pages = Router(
        path="/dashboard",
        route_handlers=[SignIn, Pages],
        middleware=[
            session_config(production=production).middleware,
            DefineMiddleware(CSRFMiddleware, config=csrf_config(production=production)),
        ],
        exception_handlers={
            SignInRequired: _sign_in_required,
            NotAuthorizedException: _sign_in_required,
            PermissionDeniedException: _forbidden,
            HTTPException: _http_error,
            ValidationFailed: _billfold_error,
            BillfoldError: _billfold_error,
        },
        response_headers=SECURITY_HEADERS,
        include_in_schema=False,
    )
    static = create_static_files_router(
        path="/dashboard/static", directories=[STATIC], include_in_schema=False, name="dashboard-static"
    )
    operators = Operators(
        billfold.db, billfold.operator.identify, os.environ.get("BILLFOLD_ADMIN_API_KEY", "")
    )
    state = {
        OPERATORS_STATE_KEY: operators,
        BILLFOLD_STATE_KEY: billfold,
        READS_STATE_KEY: queries.DashboardReads(billfold.db),
    }
    return [pages, static], state
