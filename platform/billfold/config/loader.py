"""Load billing.yaml: `${VAR}` interpolation, typed conversion, errors with key path and line."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from billfold.config.schema import BillfoldConfig, ChannelConfig, CurrencyConfig

T = TypeVar("T")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_PATH_IN_MESSAGE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN_FIELD = re.compile(r"unknown field `(?P<field>[^`]+)`")


_KEYED_SECTIONS: dict[str, type[Any]] = {"currencies": CurrencyConfig, "channels": ChannelConfig}


class ConfigError(Exception):
    """A configuration problem, pointing at the file, the key path and the line."""

    def __init__(self, message: str, *, path: str = "", line: int | None = None, source: str = "") -> None:
        self.message = message
        self.key_path = path
        self.line = line
        self.source = source
        where = source or "<config>"
        if line is not None:
            where += f":{line}"
        if path:
            where += f" at `{path}`"
        super().__init__(f"{where}: {message}")


class _Lines:
    """Maps key paths (``a.b[0].c``) to the 1-based line of the YAML node."""

    def __init__(self) -> None:
        self.by_path: dict[str, int] = {}

    def walk(self, node: yaml.Node, path: str) -> None:
        self.by_path.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                self.by_path[child] = key.start_mark.line + 1
                self.walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.walk(item, f"{path}[{index}]")

    def line_for(self, path: str) -> int | None:
        while path:
            if path in self.by_path:
                return self.by_path[path]
            shorter = re.sub(r"(\.?[^.\[]+|\[\d+\])$", "", path)
            if shorter == path:
                break
            path = shorter
        return self.by_path.get("")


def _interpolate(node: yaml.Node, environ: dict[str, str] | os._Environ[str], source: str) -> None:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in scalar values, then re-resolve their YAML type."""
    if isinstance(node, yaml.MappingNode):
        for _key, value in node.value:
            _interpolate(value, environ, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _interpolate(item, environ, source)
    elif isinstance(node, yaml.ScalarNode) and isinstance(node.value, str) and "${" in node.value:

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = environ.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    raise ConfigError(
                        f"environment variable {name} is not set (use ${{{name}:-default}} for a default)",
                        line=node.start_mark.line + 1,
                        source=source,
                    )
                return default
            return value

        node.value = _VAR.sub(replace, node.value)
        if node.style is None:  # a plain scalar: let YAML type the substituted text (ints, bools, null)
            node.tag = yaml.resolver.Resolver().resolve(yaml.ScalarNode, node.value, (True, False))


_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def _name_keys(data: Any, schema: type[Any], path: str) -> str:
    """msgspec writes a mapping's key as ``[...]`` in an error's path (``.channels[...].steps[1]``):
    find which key fails by converting the data with that mapping cut down to one key at a time
    (only when converting already failed), so the path names it (``.channels.sms.steps[1]``)."""
    head, marker, _ = path.partition("[...]")
    if not marker:
        return path
    parent, node = None, data
    for name, index in _SEGMENT.findall(head):
        parent, node = node, (node.get(name) if name and isinstance(node, dict) else None)
        if index:
            node = parent[int(index)] if isinstance(parent, list) and int(index) < len(parent) else None
        if node is None:
            return path
    if not isinstance(node, dict):
        return path
    for key, value in node.items():
        node_items = dict(node)
        node.clear()
        node[key] = value
        try:
            msgspec.convert(data, schema, strict=False)
        except msgspec.ValidationError as exc:
            found = _PATH_IN_MESSAGE.search(str(exc))
            if found and found.group("path").startswith(head + "[...]"):
                rest = found.group("path")[len(head) + len("[...]") :]
                node.clear()
                node.update(node_items)
                return _name_keys(data, schema, f"{head}.{key}{rest}")
        finally:
            node.clear()
            node.update(node_items)
    return path


def _dotted(path: str) -> str:
    return path[1:] if path.startswith(".") else path


def convert_section(data: Any, schema: type[T], *, lines: _Lines | None, prefix: str, source: str) -> T:
    """Convert ``data`` into ``schema``; a failure becomes a ConfigError with the key path and line."""
    try:
        return msgspec.convert(data, schema, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        path = prefix
        match = _PATH_IN_MESSAGE.search(message)
        if match:
            message = message[: match.start()]
            path = _dotted(prefix + _name_keys(data, schema, match.group("path")))
        unknown = _UNKNOWN_FIELD.search(message)
        if unknown:
            path = f"{path}.{unknown.group('field')}" if path else unknown.group("field")
        line = lines.line_for(path) if lines else None
        raise ConfigError(message, path=path, line=line, source=source) from None


def load_config_text(
    text: str, *, source: str = "<config>", environ: dict[str, str] | os._Environ[str] | None = None
) -> tuple[BillfoldConfig, _Lines]:
    """Parse and validate a billing.yaml document."""
    env = os.environ if environ is None else environ
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError(str(exc.problem), line=mark.line + 1 if mark else None, source=source) from None
    if root is None:
        raise ConfigError("the file is empty", source=source)
    lines = _Lines()
    lines.walk(root, "")
    _interpolate(root, env, source)
    data = yaml.SafeLoader(text).construct_document(root)
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping", line=1, source=source)
    database_url = env.get("BILLFOLD_DATABASE_URL")
    if database_url:
        data.setdefault("database", {})
        if isinstance(data["database"], dict):
            data["database"]["url"] = database_url
    # Keyed sections are checked entry by entry so an error names the key (`currencies.usd...`).
    for section, schema in _KEYED_SECTIONS.items():
        entries = data.get(section)
        if isinstance(entries, dict):
            for key, value in entries.items():
                convert_section(value, schema, lines=lines, prefix=f"{section}.{key}", source=source)
    config = convert_section(data, BillfoldConfig, lines=lines, prefix="", source=source)
    return config, lines


def default_config_path() -> Path:
    return Path(os.environ.get("BILLFOLD_CONFIG", "config/billing.yaml"))


def load_config(path: str | Path | None = None) -> tuple[BillfoldConfig, _Lines]:
    """Load the config file named by ``path``, ``$BILLFOLD_CONFIG`` or config/billing.yaml."""
    file = Path(path) if path is not None else default_config_path()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror}", source=str(file)) from None
    return load_config_text(text, source=str(file))
