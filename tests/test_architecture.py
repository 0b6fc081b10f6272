"""The house's rules, read from the code itself: no import cycle in billfold, one composition root,
plugins speak only the public API, routes open no transactions, dependencies resolve one after the
other, and every hook is documented in the README with its signature and an example."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import billfold
from billfold import hookspecs
from billfold.api.app import create_app
from conftest import ROOT

PACKAGE = ROOT / "platform" / "billfold"
PLUGINS = ROOT / "plugins"
DOMAINS = ("orgs", "ledger", "payments", "events", "audit", "invoices")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    _module_name(path): path
    for path in PACKAGE.rglob("*.py")
    if "migrations" not in path.parts  # Alembic scripts are run by Alembic, not imported
}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _load_time_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: top level and class bodies, not functions,
    not ``if TYPE_CHECKING:`` blocks."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _load_time_imports(node.body)
            yield from _load_time_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _load_time_imports(block)
        elif isinstance(node, ast.ClassDef):
            yield from _load_time_imports(node.body)


def _targets(node: ast.Import | ast.ImportFrom) -> set[str]:
    found: set[str] = set()
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names
        ]
    for name in names:
        if not name.startswith("billfold"):
            continue
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        # importing a.b.c runs a/__init__ and a/b/__init__ first
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return {target for target in found if target in MODULES}


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        edges: set[str] = set()
        for node in _load_time_imports(tree.body):
            edges |= _targets(node)
        # A module's own enclosing packages are already being imported when it runs (a package's
        # __init__ importing its submodules is not a cycle).
        graph[name] = {e for e in edges if e != name and not name.startswith(e + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_the_code():
    graph = import_graph()
    assert "billfold.ledger.service" in graph["billfold.ledger.holds"]
    assert "billfold.api.app" in MODULES and len(MODULES) > 40


def test_billfold_has_no_import_cycle():
    assert _cycles(import_graph()) == []


def test_a_cycle_would_be_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_composition_root_is_the_only_module_that_imports_every_domain():
    graph = import_graph()

    def domains(module: str) -> set[str]:
        # table definitions do not count: Alembic's model registry (db.models) lists them all
        return {
            d
            for d in DOMAINS
            if any(t.startswith(f"billfold.{d}.") and not t.endswith(".models") for t in graph[module])
        }

    assert [m for m in graph if domains(m) == set(DOMAINS)] == ["billfold.api.app"]
    # and no domain imports the composition root back
    assert [m for m in graph if "billfold.api.app" in graph[m]] == []


def _plugin_files() -> list[Path]:
    return sorted(p for p in PLUGINS.rglob("*.py") if "migrations" not in p.parts or p.name == "env.py")


def test_plugins_import_only_the_public_api():
    public = set(billfold.__all__)
    offences = []
    files = _plugin_files()
    assert files, "no first-party plugin found"
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                offences += [f"{path}: import {a.name}" for a in node.names if a.name.startswith("billfold.")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("billfold"):
                if node.module != "billfold":
                    if not (node.module or "").startswith("billfold_"):
                        offences.append(f"{path}: from {node.module} import ...")
                    continue
                offences += [f"{path}: billfold.{a.name}" for a in node.names if a.name not in public]
    assert offences == []


ROUTE_MODULES = sorted([*PACKAGE.glob("*/routes.py"), PACKAGE / "api" / "system.py"], key=lambda p: str(p))
_OPENS = {"begin", "connect", "transaction", "reading", "raw_connection", "session"}


def test_no_route_module_opens_a_connection_or_a_transaction():
    assert len(ROUTE_MODULES) >= 4
    offences = []
    for path in ROUTE_MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _OPENS
            ):
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.func.attr}(...)")
            if isinstance(node, ast.Attribute) and node.attr == "engine":
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno} .engine")
    assert offences == []


async def test_dependencies_resolve_one_after_the_other(state):
    app = create_app(state)
    models = [model for route in app.routes for _h, model in getattr(route, "route_handler_map", {}).values()]
    charge = next(
        model
        for route in app.routes
        if route.path == "/v1/billing/charges"
        for _h, model in route.route_handler_map.values()  # type: ignore[union-attr]
        if model.dependency_batches
    )
    assert len(charge.dependency_batches) >= 4  # org, ledger, idempotency, currencies
    assert all(len(batch) == 1 for model in models for batch in model.dependency_batches)


# -- the plugin guide ------------------------------------------------------------------------------------

README = (ROOT / "README.md").read_text()
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("billfold_"))


def _hook_section(name: str) -> str:
    match = re.search(rf"^#### `{name}\(.*?(?=^#### |^## |\Z)", README, re.M | re.S)
    return match.group(0) if match else ""


def test_the_hook_list_is_what_the_specs_declare():
    assert "billfold_price_usage" in HOOKS and "billfold_balance_crossed" in HOOKS
    assert "billfold_balance_watermarks" not in HOOKS and "billfold_balance_below_watermark" not in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_its_readme_section_with_signature_and_example(hook):
    section = _hook_section(hook)
    assert section, f"README has no `#### \\`{hook}(...)\\`` section"
    spec = getattr(hookspecs, hook)
    for argument in spec.__code__.co_varnames[: spec.__code__.co_argcount]:
        assert argument in section.splitlines()[0], f"{hook}: the heading does not name `{argument}`"
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example, f"{hook}: no python example"
    assert "@hookimpl" in example.group(1) and f"def {hook}(" in example.group(1)
    compile(example.group(1), f"README:{hook}", "exec")
