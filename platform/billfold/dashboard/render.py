"""Rendering helpers of the dashboard: the Jinja environment's filters, plugin panels (a fragment
or a template rendered with autoescaping) and error pages."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from litestar import Request, Response
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig
from markupsafe import Markup

from billfold.clock import now
from billfold.money import format_minor

logger = logging.getLogger("billfold.dashboard")

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


def render_panel(request: Request[Any, Any, Any], item: Any) -> dict[str, Any]:
    if item.panel is None:
        return {"plugin": item.plugin, "title": item.plugin, "body": None, "error": item.error, "actions": []}
    panel = item.panel
    body: Any = Markup(panel.html)
    error = None
    if panel.template is not None:
        engine: JinjaTemplateEngine = request.app.template_engine  # type: ignore[assignment]
        try:
            body = Markup(engine.engine.from_string(panel.template).render(**dict(panel.context)))
        except Exception:
            logger.exception("the dashboard panel %r of %s failed to render", panel.title, item.plugin)
            body, error = None, "This panel failed to render."
    return {
        "plugin": item.plugin,
        "title": panel.title,
        "body": body,
        "error": error,
        "actions": panel.actions,
    }


def error_page(request: Request[Any, Any, Any], status_code: int, title: str, message: str) -> Response[Any]:
    engine: JinjaTemplateEngine = request.app.template_engine  # type: ignore[assignment]
    body = engine.get_template("error.html").render(
        title=title, message=message, status=status_code, operator=None, flash=None, csrf_input=""
    )
    return Response(body, status_code=status_code, media_type="text/html", headers=SECURITY_HEADERS)


def _money(cents: int | None, units: int = 2) -> str:
    return "—" if cents is None else format_minor(int(cents), units)


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    def configure(engine: JinjaTemplateEngine) -> None:
        engine.engine.filters["money"] = _money
        engine.engine.globals["today"] = lambda: now().date()

    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=configure)
