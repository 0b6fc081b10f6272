"""The plugin manager: entry points of the group ``billfold``, the core's default plugins, tracing."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

from billfold import hookspecs

if TYPE_CHECKING:
    from billfold.config.loader import _Lines

logger = logging.getLogger("billfold.plugins")

DEFAULT_PLUGINS = (
    "billfold.payments.local",
    "billfold.payments.hooks",
)
"""Core modules that implement hooks the same way a third-party plugin does (fallbacks are trylast)."""


def create_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    """Build a plugin manager with the core's default plugins and the installed entry points.

    ``BILLFOLD_PLUGINS`` (comma separated entry-point names) limits which installed plugins load;
    ``BILLFOLD_TRACE_HOOKS=1`` logs every hook call.
    """
    pm = pluggy.PluginManager("billfold")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        module = __import__(name, fromlist=["*"])
        pm.register(module, name=name)
    if load_entry_points:
        allowed = os.environ.get("BILLFOLD_PLUGINS")
        if allowed is None:
            pm.load_setuptools_entrypoints("billfold")
        else:
            wanted = {n.strip() for n in allowed.split(",") if n.strip()}
            from importlib.metadata import entry_points

            for ep in entry_points(group="billfold"):
                if ep.name in wanted and pm.get_plugin(ep.name) is None:
                    pm.register(ep.load(), name=ep.name)
    if os.environ.get("BILLFOLD_TRACE_HOOKS"):
        pm.trace.root.setwriter(lambda message: logger.info("hook %s", message.rstrip()))
        pm.enable_tracing()
    return pm


def plugin_config_schemas(pm: pluggy.PluginManager) -> dict[str, type[Any]]:
    schemas: dict[str, type[Any]] = {}
    for answer in pm.hook.billfold_config_schema():
        if answer:
            name, schema = answer
            schemas[name] = schema
    return schemas


def validate_plugin_configs(
    pm: pluggy.PluginManager, raw: dict[str, dict[str, Any]], *, lines: _Lines | None, source: str
) -> dict[str, Any]:
    """Convert each ``plugins.<name>`` section with the plugin's own schema.

    A section for a plugin that is not installed is an error (a typo would otherwise be silently
    ignored); a plugin whose section is absent gets its schema's defaults.
    """
    from billfold.config.loader import ConfigError, convert_section

    schemas = plugin_config_schemas(pm)
    converted: dict[str, Any] = {}
    for name, section in raw.items():
        if name not in schemas:
            line = lines.line_for(f"plugins.{name}") if lines else None
            known = ", ".join(sorted(schemas)) or "none"
            raise ConfigError(
                f"no installed plugin takes a `{name}` section (plugins with a section: {known})",
                path=f"plugins.{name}",
                line=line,
                source=source,
            )
        converted[name] = convert_section(
            section or {}, schemas[name], lines=lines, prefix=f"plugins.{name}", source=source
        )
    for name, schema in schemas.items():
        if name not in converted:
            converted[name] = convert_section(
                {}, schema, lines=lines, prefix=f"plugins.{name}", source=source
            )
    return converted


async def resolve(value: Any) -> Any:
    """Await ``value`` if a hook returned an awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value


async def call_all(results: Iterable[Any]) -> list[Any]:
    """Await every awaitable among a hook call's results, in order.

    When one raises, the coroutines of the implementations after it are closed unawaited (they
    never started), so the refusal propagates without "never awaited" warnings."""
    pending = list(results)
    answers: list[Any] = []
    try:
        for result in pending:
            answers.append(await resolve(result))
    except BaseException:
        for result in pending[len(answers) + 1 :]:
            if inspect.iscoroutine(result):
                result.close()
        raise
    return answers


def plugin_names(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Describe registered plugins (for `billfold plugins list` and the API)."""
    described = []
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin) or repr(plugin)
        dist = dists.get(id(plugin))
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        described.append(
            {
                "name": name,
                "version": dist.version if dist else None,
                "distribution": dist.project_name if dist else None,
                "default": name in DEFAULT_PLUGINS,
                "hooks": hooks,
            }
        )
    return sorted(described, key=lambda d: (d["default"], d["name"]))
