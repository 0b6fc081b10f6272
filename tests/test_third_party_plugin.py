"""A third-party plugin built from the README's own code blocks.

The blocks whose first line is ``# file: <path>`` are written into a directory outside the
workspace, installed with Billfold into a fresh virtual environment (uv, from its cache), and run:
``billfold db upgrade`` applies the plugin's migration in its own version table, its CLI command
works, and over HTTP its tenant route serves the caller's memos only while its hook writes one when
a payment is credited. The plugin's imports are checked against ``billfold.__all__``."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import billfold
from conftest import ROOT

README = (ROOT / "README.md").read_text()
UV = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")


def readme_files() -> dict[str, str]:
    files = {}
    for body in re.findall(r"```(?:python|toml)\n(.*?)```", README, re.S):
        first, _, rest = body.partition("\n")
        match = re.fullmatch(r"# file: (\S+)", first.strip())
        if match:
            files[match.group(1)] = rest
    return files


HTTP_CHECK = r"""
import asyncio, json, os, sys
import httpx
from billfold.api.app import build, create_app

async def main():
    app = create_app(build())
    async with app.lifespan():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            admin = {"Authorization": "Bearer " + os.environ["BILLFOLD_ADMIN_API_KEY"]}
            a = (await c.post("/v1/admin/organizations", json={"name": "A"}, headers=admin)).json()
            b = (await c.post("/v1/admin/organizations", json={"name": "B"}, headers=admin)).json()
            ka = {"Authorization": "Bearer " + a["api_key"]}
            kb = {"Authorization": "Bearer " + b["api_key"]}
            out = {}
            out["add"] = (await c.post("/v1/memos", json={"text": "hello"}, headers=ka)).status_code
            out["bad"] = (await c.post("/v1/memos", json={"text": "x" * 501}, headers=ka)).status_code
            out["anonymous"] = (await c.get("/v1/memos")).status_code
            card = {"payment_method_id": "pm_card_visa"}
            await c.post("/v1/billing/default-payment-method", json=card, headers=ka)
            topped = await c.post("/v1/billing/top-up", json={"amount_cents": 700}, headers=ka)
            out["top_up"] = topped.status_code
            out["a"] = [m["text"] for m in (await c.get("/v1/memos", headers=ka)).json()]
            out["b"] = (await c.get("/v1/memos", headers=kb)).json()
            out["org"] = a["id"]
            print(json.dumps(out))

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def memo_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """billfold-memo from the README, installed with Billfold into its own virtual environment."""
    root = tmp_path_factory.mktemp("outside") / "billfold-memo"
    for name, text in readme_files().items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (root / "billfold_memo" / "__init__.py").touch()
    venv = root / ".venv"
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    subprocess.run([UV, "venv", "-q", str(venv), "--python", sys.executable], check=True, env=env)
    subprocess.run(
        # the first-party plugins too: the shipped billing.yaml has their sections
        [
            *(UV, "pip", "install", "-q", "-e", str(ROOT / "platform"), "-e", str(root), "httpx"),
            *("-e", str(ROOT / "plugins" / "tiers"), "-e", str(ROOT / "plugins" / "alerts")),
        ],
        check=True,
        env=env,
        timeout=300,
    )
    return root


def run(
    root: Path, database: Path, *args: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BILLFOLD_CONFIG": str(config or ROOT / "config" / "billing.yaml"),
        "BILLFOLD_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "VIRTUAL_ENV": str(root / ".venv"),
    }
    for name in ("BILLFOLD_PLUGINS", "PYTHONPATH"):
        env.pop(name, None)
    return subprocess.run(
        [str(root / ".venv" / "bin" / args[0]), *args[1:]],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_readme_holds_the_whole_plugin():
    files = readme_files()
    assert {
        "pyproject.toml",
        "billfold_memo/plugin.py",
        "billfold_memo/models.py",
        "billfold_memo/migrations/env.py",
    } <= set(files)
    assert "[project.entry-points.billfold]" in files["pyproject.toml"]


def test_the_plugin_imports_only_the_public_api():
    public = set(billfold.__all__)
    for name, text in readme_files().items():
        if not name.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("billfold"):
                if node.module == "billfold":
                    assert {a.name for a in node.names} <= public, name
                else:
                    assert (node.module or "").startswith("billfold_memo"), f"{name}: from {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("billfold.") for a in node.names), name


def test_a_plugin_from_the_readme_runs_beside_billfold(memo_env: Path, tmp_path: Path):
    database = tmp_path / "memo.db"
    upgraded = run(memo_env, database, "billfold", "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "memo: empty -> memo_0001 (applied memo_0001)" in upgraded.stdout
    listed = run(memo_env, database, "billfold", "plugins", "list")
    assert re.search(r"^memo \(billfold-memo 0\.1\.0, enabled\): .*billfold_routes", listed.stdout, re.M)

    created = run(memo_env, database, "billfold", "orgs", "create", "--name", "Memo", "--json")
    assert created.returncode == 0, created.stderr
    org = json.loads(created.stdout)["id"]
    added = run(memo_env, database, "billfold", "memos", "--org", org, "called the customer")
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines() == ["called the customer"]

    check = tmp_path / "check.py"
    check.write_text(HTTP_CHECK)
    env_run = run(memo_env, database, "python", str(check))
    assert env_run.returncode == 0, env_run.stderr
    out = json.loads(env_run.stdout.splitlines()[-1])
    assert (out["add"], out["bad"], out["anonymous"], out["top_up"]) == (201, 400, 401, 201)
    assert out["a"] == ["hello", "paid 700 (top_up)"]  # the hook wrote one when the payment was credited
    assert out["b"] == []  # another organization sees none of them

    # switched off, its hooks are gone (the route is 404) but Billfold still upgrades
    text = (ROOT / "config" / "billing.yaml").read_text()
    off = tmp_path / "off.yaml"
    off.write_text(text.replace("\nplugins:\n", "\nplugins:\n  memo:\n    enabled: false\n"))
    assert off.read_text() != text
    again = run(memo_env, database, "billfold", "db", "upgrade", config=off)
    listed_off = run(memo_env, database, "billfold", "plugins", "list", config=off)
    assert again.returncode == 0, again.stderr
    assert "memo" not in again.stdout
    assert "memo (billfold-memo 0.1.0, disabled)" in listed_off.stdout
