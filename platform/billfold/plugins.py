"""The plugin manager: entry points of the group ``billfold``, the core's default plugins, tracing,
plugin config sections, and the caller every service uses to run hooks with ``state``."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import msgspec
import pluggy

from billfold import hookspecs

if TYPE_CHECKING:
    from billfold.config import BillfoldConfig
    from billfold.config.loader import _Lines
    from billfold.db import Database
    from billfold.hookspecs import PluginState
    from billfold.ledger.holds import HoldService
    from billfold.ledger.service import LedgerService
    from billfold.orgs.service import OrgService
    from billfold.payments.provider import PaymentProvider

logger = logging.getLogger("billfold.plugins")

DEFAULT_PLUGINS = ("billfold.payments.local",)
"""Core modules registered as plugins the way a third party's are (their fallbacks are trylast).
Services that implement hooks (auto-reload, pricing) are registered by the composition root."""

ENTRY_POINT_GROUP = "billfold"


def create_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    """Build a plugin manager with the core's default plugins and the installed entry points.

    ``BILLFOLD_PLUGINS`` (comma separated entry-point names) limits which installed plugins load;
    ``BILLFOLD_TRACE_HOOKS=1`` logs every hook call (``state`` shows as a one-line summary, and
    configs are printed with their secrets redacted).
    """
    pm = pluggy.PluginManager("billfold")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        module = __import__(name, fromlist=["*"])
        pm.register(module, name=name)
    if load_entry_points:
        allowed = os.environ.get("BILLFOLD_PLUGINS")
        if allowed is None:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        else:
            wanted = {n.strip() for n in allowed.split(",") if n.strip()}
            from importlib.metadata import entry_points

            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in wanted and pm.get_plugin(ep.name) is None:
                    pm.register(ep.load(), name=ep.name)
    if os.environ.get("BILLFOLD_TRACE_HOOKS"):
        pm.trace.root.setwriter(lambda message: logger.info("hook %s", message.rstrip()))
        pm.enable_tracing()
    return pm


# -- plugin config sections -----------------------------------------------------------------------


class PluginSections(msgspec.Struct, frozen=True):
    """The validated ``plugins.<name>`` sections and which plugins they switched off."""

    configs: dict[str, Any]
    disabled: frozenset[str]
    owners: dict[str, str]
    """section name → the registered plugin name that declared it."""


def _schemas(pm: pluggy.PluginManager) -> dict[str, tuple[type[Any], str]]:
    """section name → (schema, name of the plugin declaring it)."""
    found: dict[str, tuple[type[Any], str]] = {}
    for impl in pm.hook.billfold_config_schema.get_hookimpls():
        answer = cast("tuple[str, type[Any]] | None", impl.function())
        if answer:
            name, schema = answer
            found[name] = (schema, impl.plugin_name)
    return found


def _declares_enabled(schema: type[Any]) -> bool:
    return "enabled" in getattr(schema, "__struct_fields__", ())


def validate_plugin_configs(
    pm: pluggy.PluginManager, raw: Mapping[str, Any], *, lines: _Lines | None, source: str
) -> PluginSections:
    """Convert each ``plugins.<name>`` section with the plugin's own schema.

    Every section accepts ``enabled`` (a schema may declare it itself, with its own default; else
    it defaults to true). A section for a plugin that is not installed is an error (a typo would
    otherwise be silently ignored); a plugin whose section is absent gets its schema's defaults.
    """
    from billfold.config.loader import ConfigError, convert_section

    schemas = _schemas(pm)
    configs: dict[str, Any] = {}
    disabled: set[str] = set()
    for name in raw:
        if name not in schemas:
            known = ", ".join(sorted(schemas)) or "none"
            raise ConfigError(
                f"no installed plugin takes a `{name}` section (plugins with a section: {known})",
                path=f"plugins.{name}",
                line=lines.line_for(f"plugins.{name}") if lines else None,
                source=source,
            )
    for name, (schema, _owner) in schemas.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(
                "a plugin section must be a mapping",
                path=f"plugins.{name}",
                line=lines.line_for(f"plugins.{name}") if lines else None,
                source=source,
            )
        data = dict(section)
        enabled: Any = True
        if not _declares_enabled(schema) and "enabled" in data:
            enabled = data.pop("enabled")
            if not isinstance(enabled, bool):
                raise ConfigError(
                    "Expected `bool`",
                    path=f"plugins.{name}.enabled",
                    line=lines.line_for(f"plugins.{name}.enabled") if lines else None,
                    source=source,
                )
        if enabled is False:
            # A switched-off plugin's other settings are not checked: it may be half configured.
            disabled.add(name)
            configs[name] = None
            continue
        converted = convert_section(data, schema, lines=lines, prefix=f"plugins.{name}", source=source)
        configs[name] = converted
        if _declares_enabled(schema) and getattr(converted, "enabled", True) is False:
            disabled.add(name)
    return PluginSections(
        configs=configs,
        disabled=frozenset(disabled),
        owners={name: owner for name, (_schema, owner) in schemas.items()},
    )


def switch_off_disabled(pm: pluggy.PluginManager, sections: PluginSections) -> list[str]:
    """Unregister the plugins whose section says ``enabled: false``: none of their hooks runs
    (their routes are 404, their prices and reactions are gone). Returns their names."""
    removed = []
    for section in sorted(sections.disabled):
        owner = sections.owners.get(section)
        if owner is None or owner in DEFAULT_PLUGINS:
            continue
        plugin = pm.get_plugin(owner)
        if plugin is not None:
            pm.unregister(plugin)
            removed.append(owner)
    return removed


# -- calling hooks -------------------------------------------------------------------------------


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


class Hooks:
    """Runs hooks by keyword with ``state``, awaiting async implementations.

    Services receive this instead of the plugin manager, so a hook can never be called without
    the state it promises."""

    def __init__(self, pm: pluggy.PluginManager, state: PluginState) -> None:
        self.pm = pm
        self.state = state
        self._relay = pm.hook

    def implemented(self, name: str) -> bool:
        return bool(getattr(self._relay, name).get_hookimpls())

    def implementers(self, name: str) -> set[object]:
        """The plugin objects that implement hook ``name``."""
        return {impl.plugin for impl in getattr(self._relay, name).get_hookimpls()}

    async def call(self, name: str, **kwargs: Any) -> list[Any]:
        """Every implementation's answer, in pluggy's order (tryfirst first)."""
        caller = getattr(self._relay, name)
        return await call_all(caller(state=self.state, **kwargs))

    def call_sync(self, name: str, **kwargs: Any) -> list[Any]:
        """For hooks that are never async (routes, schemas, commands)."""
        answers: list[Any] = getattr(self._relay, name)(state=self.state, **kwargs)
        return answers

    async def first(self, name: str, **kwargs: Any) -> Any:
        """The first non-None answer of a ``firstresult`` hook, awaiting each implementation before
        asking the next: an async implementation that passes (None) lets the next one answer."""
        kwargs["state"] = self.state
        for impl in reversed(getattr(self._relay, name).get_hookimpls()):
            answer = await resolve(impl.function(*(kwargs[arg] for arg in impl.argnames)))
            if answer is not None:
                return answer
        return None


# -- the state every hook receives ------------------------------------------------------------------


class HookState:
    """The concrete :class:`billfold.PluginState`: built by the composition root, read-only after."""

    __slots__ = ("_config", "_db", "_holds", "_ledger", "_orgs", "_provider", "_sections", "_wake")

    def __init__(self, config: BillfoldConfig, sections: PluginSections, db: Database) -> None:
        self._config = config
        self._sections = sections
        self._db = db
        self._ledger: LedgerService | None = None
        self._holds: HoldService | None = None
        self._orgs: OrgService | None = None
        self._provider: Any = None
        self._wake: Any = None

    def bind(
        self,
        *,
        ledger: LedgerService,
        holds: HoldService,
        orgs: OrgService,
        provider: Any,
        wake: Any,
    ) -> None:
        """Called once by the composition root when the services exist."""
        self._ledger, self._holds, self._orgs = ledger, holds, orgs
        self._provider, self._wake = provider, wake

    @property
    def config(self) -> BillfoldConfig:
        return self._config

    def plugin_config(self, name: str) -> Any:
        return self._sections.configs[name]

    def plugin_enabled(self, name: str) -> bool:
        return name in self._sections.configs and name not in self._sections.disabled

    @property
    def db(self) -> Database:
        return self._db

    @property
    def ledger(self) -> LedgerService:
        assert self._ledger is not None, "state is bound by the composition root"
        return self._ledger

    @property
    def holds(self) -> HoldService:
        assert self._holds is not None, "state is bound by the composition root"
        return self._holds

    @property
    def orgs(self) -> OrgService:
        assert self._orgs is not None, "state is bound by the composition root"
        return self._orgs

    @property
    def provider(self) -> PaymentProvider:
        provider: PaymentProvider = self._provider()
        return provider

    def wake_worker(self) -> None:
        if self._wake is not None:
            self._wake()

    def __repr__(self) -> str:
        # What hook tracing prints for `state`: never the config (it holds secrets).
        enabled = sorted(n for n in self._sections.configs if n not in self._sections.disabled)
        return f"<billfold state {self._config.environment} plugins={enabled}>"


# -- describing plugins -------------------------------------------------------------------------------


def describe_plugins(
    pm: pluggy.PluginManager, sections: PluginSections | None = None
) -> list[dict[str, Any]]:
    """Registered plugins with their version, whether they are enabled, and the hooks each implements
    (for ``billfold plugins list`` and the operator API)."""
    described = []
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin) or repr(plugin)
        dist = dists.get(id(plugin))
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        section = next(
            (s for s, owner in (sections.owners if sections else {}).items() if owner == name), None
        )
        enabled = not (sections and section in sections.disabled)
        described.append(
            {
                "name": name,
                # a plugin loaded by name (BILLFOLD_PLUGINS) has no recorded distribution: its
                # entry point knows it
                "version": dist.version if dist else _module_version(plugin) or _entry_point_version(name),
                "distribution": dist.project_name
                if dist
                else _module_distribution(plugin) or _entry_point_distribution(name),
                "default": name in DEFAULT_PLUGINS or getattr(plugin, "BILLFOLD_CORE", False),
                "enabled": enabled,
                "section": section,
                "hooks": hooks,
            }
        )
    if sections is not None:
        for section in sorted(sections.disabled):
            owner = sections.owners.get(section, section)
            if pm.get_plugin(owner) is None:
                described.append(
                    {
                        "name": owner,
                        "version": _entry_point_version(owner),
                        "distribution": _entry_point_distribution(owner),
                        "default": False,
                        "enabled": False,
                        "section": section,
                        "hooks": [],
                    }
                )
    return sorted(described, key=lambda d: (d["default"], d["name"]))


def _module_distribution(plugin: Any) -> str | None:
    module = getattr(plugin, "__name__", None) or type(plugin).__module__
    if (module and module.startswith("billfold.")) or module == "billfold":
        return "billfold"
    return None


def _module_version(plugin: Any) -> str | None:
    if _module_distribution(plugin) == "billfold":
        from billfold import __version__

        return __version__
    return None


def _entry_point(name: str) -> Any:
    from importlib.metadata import entry_points

    return next((ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name), None)


def _entry_point_distribution(name: str) -> str | None:
    ep = _entry_point(name)
    return ep.dist.name if ep is not None and ep.dist is not None else None


def _entry_point_version(name: str) -> str | None:
    ep = _entry_point(name)
    return ep.dist.version if ep is not None and ep.dist is not None else None
