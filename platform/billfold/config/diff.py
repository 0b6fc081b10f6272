"""``billfold config diff OLD NEW``: what an edit of billing.yaml changes, before it is applied."""

from __future__ import annotations

from typing import Any

import msgspec

from billfold.config.schema import BillfoldConfig

GROUPS = (
    ("channels", "prices"),
    ("currencies", "currencies"),
    ("plans", "plans and caps"),
    ("usage", "usage"),
    ("auto_reload", "auto-reload defaults"),
    ("plugins", "plugins"),
)


def _walk(path: str, old: Any, new: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            where = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append((where, f"- {where}: {_show(old[key])} (removed)"))
            elif key not in old:
                out.append((where, f"+ {where}: {_show(new[key])} (added)"))
            else:
                _walk(where, old[key], new[key], out)
    elif old != new:
        out.append((path, f"~ {path}: {_show(old)} -> {_show(new)}"))


def _show(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def diff(old: BillfoldConfig, new: BillfoldConfig) -> list[str]:
    """Lines grouped by what they change (prices, plans and caps, plugins, ...), empty when equal.

    The database URL is left out (it usually comes from the environment)."""
    before, after = msgspec.to_builtins(old), msgspec.to_builtins(new)
    for side in (before, after):
        side.pop("database", None)
    changes: list[tuple[str, str]] = []
    _walk("", before, after, changes)
    lines: list[str] = []
    seen: set[str] = set()
    for section, title in (*GROUPS, ("", "other settings")):
        group = [
            line
            for path, line in changes
            if path not in seen and (not section or path == section or path.startswith(section + "."))
        ]
        seen.update(path for path, _ in changes if (not section or path.split(".")[0] == section))
        if group:
            lines.append(f"{title}:")
            lines.extend(f"  {line}" for line in group)
    return lines
