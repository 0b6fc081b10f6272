"""What ``billfold serve`` says before it starts: one summary of what this server runs with."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from billfold.api.app import Billfold
    from billfold.db.migrate import Applied


def mask_url(url: str) -> str:
    """The database URL with its password masked (``***``)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can read: show nothing of it
        return "<unreadable database URL>"


def _migrations(applied: Sequence[Applied] | None, at_head: bool) -> str:
    if applied is None:
        state = "at head" if at_head else "BEHIND the scripts (run `billfold db upgrade`)"
        return f"not applied (--no-migrate); the database is {state}"
    parts = []
    for branch in applied:
        if branch.revisions:
            applied_now = ", ".join(branch.revisions)
            parts.append(
                f"{branch.name} {branch.before or 'empty'} -> {branch.after} (applied {applied_now})"
            )
        else:
            parts.append(f"{branch.name} at {branch.after or 'no revision'} (up to date)")
    return "; ".join(parts)


def _plugins(app: Billfold) -> str:
    from billfold.plugins import describe_plugins

    extra = [
        p
        for p in describe_plugins(app.pm, app.sections)
        if not p["default"] and p["distribution"] != "billfold"  # installed plugins, not the core's
    ]
    enabled = [f"{p['name']} {p['version'] or ''}".strip() for p in extra if p["enabled"]]
    disabled = [p["name"] for p in extra if not p["enabled"]]
    text = ", ".join(enabled) or "none"
    return text + (f" (disabled: {', '.join(disabled)})" if disabled else "")


def _provider(app: Billfold) -> str:
    try:
        return str(app.provider_now().name)
    except Exception as error:  # the server will refuse to start; say why here too
        return f"none ({error})"


async def _state(app: Billfold) -> tuple[int, bool, str]:
    """(live named operator keys, whether every migration branch is at its head, the payment
    provider's name); the Billfold's connections and provider are closed after."""
    from billfold.db.heads import CORE_MIGRATIONS, at_head

    branches = [("alembic_version", CORE_MIGRATIONS)] + [
        (f"alembic_version_{answer.name}", answer.script_location)
        for answer in app.hooks.call_sync("billfold_migrations")
        if answer is not None
    ]
    try:
        try:
            named = len(await app.operator_keys.list())
        except Exception:  # no table yet (--no-migrate on a fresh database)
            named = 0
        return named, await at_head(app.engine, branches), _provider(app)
    finally:
        await app.close()


def docs_path(app: Billfold) -> str | None:
    """Where the OpenAPI UI is served (None when the document is off)."""
    from billfold.api.app import create_app

    config = create_app(app).openapi_config
    if config is None:
        return None
    if config.openapi_router is not None:
        return config.openapi_router.path
    return config.path or "/schema"  # Litestar's default


def startup_summary(
    app: Billfold, *, host: str, port: int, workers: int, applied: Sequence[Applied] | None
) -> list[str]:
    """The lines ``billfold serve`` prints: database (password masked), migrations, payment
    provider, worker mode, plugins, operator routes, address and docs."""
    import asyncio

    from billfold import __version__

    docs = docs_path(app)  # first: building the app may open what _state closes
    named, at_head, provider = asyncio.run(_state(app))
    bootstrap = bool(os.environ.get("BILLFOLD_ADMIN_API_KEY"))
    if bootstrap or named:
        keys = [*(["the bootstrap key"] if bootstrap else []), *([f"{named} named key(s)"] if named else [])]
        operator = f"on ({' and '.join(keys)})"
    else:
        operator = "off: set BILLFOLD_ADMIN_API_KEY or run `billfold operator-keys create --label NAME`"
    worker = (
        "in-process (each server process runs the background worker)"
        if app.config.worker.in_process
        else "separate: run `billfold worker` beside the server"
    )
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    rows: list[tuple[str, Any]] = [
        ("database", mask_url(app.config.database.url)),
        ("migrations", _migrations(applied, at_head)),
        ("payments", provider),
        ("worker", worker),
        ("plugins", _plugins(app)),
        ("operator", operator),
        ("listening", f"{base} ({workers} server process{'es' if workers != 1 else ''})"),
        ("docs", f"{base}{docs}" if docs else "off"),
    ]
    return [f"Billfold {__version__} ({app.config.environment})"] + [f"  {k:<12}{v}" for k, v in rows]
