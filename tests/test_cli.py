"""The `billfold` command line, run as the installed console script in a subprocess against a
fresh SQLite file (BILLFOLD_DATABASE_URL) with config/billing.yaml."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from billfold.api.app import Billfold
from billfold.config import load_config_text
from conftest import ROOT, config_text, open_client, run_cli


@pytest.fixture
def cli_db(tmp_path: Path) -> tuple[Path, str]:
    """A path for a fresh SQLite file (not created yet)."""
    path = tmp_path / "cli.db"
    return path, f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def migrated_db(tmp_path: Path, sqlite_template: Path) -> tuple[Path, str]:
    """A SQLite file already at head (a copy of the session's migrated template)."""
    path = tmp_path / "migrated.db"
    shutil.copy(sqlite_template, path)
    return path, f"sqlite+aiosqlite:///{path}"


async def cli(*args: str, url: str, env: dict[str, str] | None = None):
    return await asyncio.to_thread(run_cli, *args, database_url=url, env=env)


async def test_operator_workflow(cli_db):
    path, url = cli_db

    upgraded = await cli("db", "upgrade", url=url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "head" in upgraded.stdout
    assert path.exists()

    created = await cli("orgs", "create", "--name", "Acme Telecom", "--json", url=url)
    assert created.returncode == 0, created.stderr
    org = json.loads(created.stdout)
    uuid.UUID(org["id"])
    assert org["name"] == "Acme Telecom"
    assert org["currency"] == "usd"
    assert org["api_key"].startswith("sk_test_")

    key, adjusted = await asyncio.gather(
        cli("keys", "create", "--org", org["id"], "--name", "ci", "--json", url=url),
        cli(
            "ledger",
            "adjust",
            "--org",
            org["id"],
            "--amount-cents",
            "500",
            "--description",
            "x",
            "--json",
            url=url,
        ),
    )
    assert key.returncode == 0, key.stderr
    issued = json.loads(key.stdout)
    assert issued["org_id"] == org["id"]
    assert issued["api_key"].startswith("sk_test_")
    assert issued["api_key"] != org["api_key"]
    assert adjusted.returncode == 0, adjusted.stderr
    posted = json.loads(adjusted.stdout)
    assert (posted["amount_cents"], posted["free"], posted["reserved"], posted["total"]) == (500, 500, 0, 500)

    # what the CLI wrote is what the API serves, with either key
    config, lines = load_config_text(config_text(database_url=url))
    state = Billfold(config, lines=lines)
    async with open_client(state) as client:
        for api_key in (org["api_key"], issued["api_key"]):
            response = await client.get("/v1/billing/balance", headers={"Authorization": f"Token {api_key}"})
            assert response.status_code == 200, response.text
            assert response.json() == {"free": 5.0, "reserved": 0.0, "total": 5.0, "currency": "USD"}
        transactions = (
            await client.get(
                "/v1/billing/transactions", headers={"Authorization": f"Bearer {org['api_key']}"}
            )
        ).json()["data"]
        assert [(t["kind"], t["amount_cents"], t["description"]) for t in transactions] == [
            ("adjustment", 500, "x")
        ]

    verified = await cli("ledger", "verify", url=url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ledger ok" in verified.stdout

    # corrupt the ledger behind its back: the cached balance drifts from its entries, and an
    # entry's amount no longer leads to its running balance; verify must say what and where
    with sqlite3.connect(path) as db:
        db.execute("UPDATE ledger_accounts SET free_cents = free_cents + 1")
        db.execute("UPDATE ledger_entries SET amount_cents = amount_cents + 7")
    broken = await cli("ledger", "verify", url=url)
    assert broken.returncode == 1
    assert "invariant violation" in broken.stderr
    assert "balance_equals_entries" in broken.stderr
    assert "free+reserved=501, entries sum=507" in broken.stderr
    assert "running_balance_chain" in broken.stderr
    assert org["id"] in broken.stderr
    assert "Traceback" not in broken.stderr


async def test_production_keys_are_live_keys(migrated_db):
    _, url = migrated_db
    created = await cli(
        "orgs", "create", "--name", "Live Co", "--json", url=url, env={"BILLFOLD_ENV": "production"}
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["api_key"].startswith("sk_live_")


_IMPORT_PROBE = """
import json, sys
from billfold.cli import main
main(sys.argv[1:], standalone_mode=False)
print(json.dumps(sorted(sys.modules)))
"""

_SERVING_LIBRARIES = (
    "alembic",
    "asyncpg",
    "httpx",
    "jinja2",
    "prometheus_client",
    "redis",
    "reportlab",
    "stripe",
    "uvicorn",
)


async def test_orgs_create_imports_no_http_layer(migrated_db):
    """`billfold orgs create` loads what it runs and not what serving needs: no route module (the
    core's or a plugin's), no dashboard, no PostgreSQL driver on SQLite, no Alembic on a migrated
    database, no PDF, metrics, HTTP client, server or Stripe library. Litestar itself is loaded:
    advanced-alchemy, which the models are built on, imports it."""
    _, url = migrated_db
    environ = {**os.environ, "BILLFOLD_DATABASE_URL": url, "BILLFOLD_CONFIG": "config/billing.yaml"}
    environ.pop("BILLFOLD_PLUGINS", None)
    ran = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _IMPORT_PROBE, "orgs", "create", "--name", "Lean", "--json"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    created, modules = ran.stdout.splitlines()[-2:]
    assert json.loads(created)["name"] == "Lean"
    loaded = set(json.loads(modules))
    assert {"billfold.orgs.service", "billfold_tiers.plugin", "billfold_alerts.plugin"} <= loaded
    unwanted = sorted(
        name
        for name in loaded
        if name.split(".")[0] in _SERVING_LIBRARIES
        or name.startswith(("billfold.dashboard", "billfold.metrics", "billfold_alerts.delivery"))
        or (name.startswith("billfold") and name.rpartition(".")[2].startswith("routes"))
    )
    assert unwanted == []


async def test_errors_are_reported_without_tracebacks(migrated_db):
    _, url = migrated_db
    unknown_org, bad_currency = await asyncio.gather(
        cli(
            "ledger",
            "adjust",
            "--org",
            str(uuid.uuid4()),
            "--amount-cents",
            "5",
            "--description",
            "x",
            url=url,
        ),
        cli("orgs", "create", "--name", "X", "--currency", "gbp", url=url),
    )
    assert unknown_org.returncode == 1
    assert "account_not_found" in unknown_org.stderr
    assert bad_currency.returncode == 1
    assert "invalid_currency" in bad_currency.stderr
    for result in (unknown_org, bad_currency):
        assert "Traceback" not in result.stderr


async def test_plugins_list(tmp_path):
    listed = await cli("plugins", "list", url=f"sqlite+aiosqlite:///{tmp_path}/unused.db")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    profiles = next(
        line for line in lines if line.startswith("billfold.payments.profiles (default, enabled):")
    )
    assert "billfold_organization_created" in profiles
    reloads = next(
        line for line in lines if line.startswith("billfold.payments.autoreload (default, enabled):")
    )
    assert "billfold_balance_levels" in reloads and "billfold_balance_crossed" in reloads
    # an installed plugin is listed with the distribution its entry point comes from
    assert any(line.startswith("stripe (billfold-stripe ") for line in lines), listed.stdout


async def test_version_and_help(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/unused.db"
    version, helped = await asyncio.gather(cli("--version", url=url), cli("--help", url=url))
    assert version.returncode == 0
    assert "0.1.0" in version.stdout
    assert helped.returncode == 0
    for command in ("serve", "worker", "config", "db", "orgs", "keys", "ledger", "plugins"):
        assert command in helped.stdout


async def test_refresh_levels_teaches_existing_accounts_the_watched_levels(migrated_db):
    """An account that predates a watched level (here: auto-reload switched on behind the
    ledger's back, as a newly installed plugin would) learns it from `ledger refresh-levels`."""
    path, url = migrated_db
    created = await cli("orgs", "create", "--name", "Stale", "--json", url=url)
    assert created.returncode == 0, created.stderr
    org_id = uuid.UUID(json.loads(created.stdout)["id"]).bytes

    def watermark() -> list[int]:
        with sqlite3.connect(path) as db:
            row = db.execute("SELECT watch_levels FROM ledger_accounts WHERE org_id = ?", (org_id,))
            value: list[int] = json.loads(row.fetchone()[0])
            return value

    before = watermark()
    with sqlite3.connect(path) as db:
        updated = db.execute(
            "UPDATE billing_profiles SET auto_reload_enabled = 1, auto_reload_minimum_cents = 700, "
            "auto_reload_amount_cents = 2000 WHERE org_id = ?",
            (org_id,),
        )
        assert updated.rowcount == 1
    assert watermark() == before  # the ledger was not told

    refreshed = await cli("ledger", "refresh-levels", url=url)
    assert refreshed.returncode == 0, refreshed.stderr
    assert "1 account(s), 1 changed" in refreshed.stdout
    assert watermark() == [700]
    again = await cli("ledger", "refresh-levels", url=url)
    assert "1 account(s), 0 changed" in again.stdout


# -- billfold serve's start-up summary, plugins list, --json help ------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve_until_ready(url: str, port: int, log: Path) -> tuple[list[str], int]:
    """Start `billfold serve`, read its summary, check that the server it describes answers,
    then stop it. Returns the summary and the status of the docs page."""
    import os
    import subprocess
    import threading
    import time

    import httpx

    from conftest import BILLFOLD_CLI, ROOT

    environ = {
        **os.environ,
        "BILLFOLD_DATABASE_URL": url,
        "BILLFOLD_CONFIG": "config/billing.yaml",
        "BILLFOLD_ADMIN_API_KEY": "serve_summary_key",
    }
    environ.pop("BILLFOLD_PLUGINS", None)
    errors = log.open("w")
    server = subprocess.Popen(
        [str(BILLFOLD_CLI), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    watchdog = threading.Timer(120, server.kill)  # a hung start-up ends the read below
    watchdog.start()
    try:
        assert server.stdout is not None
        lines: list[str] = []
        for line in server.stdout:
            lines.append(line.rstrip("\n"))
            if line.lstrip().startswith("docs"):
                break
        assert lines and lines[-1].lstrip().startswith("docs"), (lines, log.read_text())
        docs = lines[-1].split()[-1]
        status = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status = httpx.get(docs, timeout=5).status_code
                break
            except httpx.TransportError:
                time.sleep(0.3)
        return lines, status
    finally:
        watchdog.cancel()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        errors.close()


async def test_serve_prints_one_startup_summary(cli_db):
    path, url = cli_db
    port = _free_port()
    lines, docs_status = await asyncio.to_thread(_serve_until_ready, url, port, path.with_suffix(".log"))
    assert lines[0] == "Billfold 0.1.0 (development)", lines
    summary = {line.split()[0]: line.split(None, 1)[1] for line in lines[1:]}
    assert list(summary) == [
        "database",
        "migrations",
        "payments",
        "worker",
        "plugins",
        "operator",
        "listening",
        "docs",
    ]
    assert summary["database"] == url
    assert summary["migrations"].startswith("core empty -> ") and "(applied 0001, " in summary["migrations"]
    assert summary["payments"] == "local"
    assert summary["worker"].startswith("in-process")
    assert "stripe" in summary["plugins"]  # installed, switched off by config/billing.yaml
    assert "billfold.usage" not in summary["plugins"]  # the core's own services are not plugins
    assert summary["operator"] == "on (the bootstrap key)"
    assert summary["listening"] == f"http://127.0.0.1:{port} (1 server process)"
    assert summary["docs"] == f"http://127.0.0.1:{port}/schema"
    assert docs_status == 200  # what the summary says is where the server is
    assert path.exists()


def test_the_database_password_is_masked():
    from billfold.serve_summary import mask_url

    masked = mask_url("postgresql+asyncpg://billfold:s3cr%40t@db.internal:5432/billing")
    assert masked == "postgresql+asyncpg://billfold:***@db.internal:5432/billing"
    assert mask_url("sqlite+aiosqlite:///billfold.db") == "sqlite+aiosqlite:///billfold.db"
    assert "hunter2" not in mask_url("not a url hunter2")


async def test_plugins_loaded_by_name_show_their_distribution_and_version(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/unused.db"
    everything, by_name = await asyncio.gather(
        cli("plugins", "list", url=url),
        cli("plugins", "list", url=url, env={"BILLFOLD_PLUGINS": "stripe,tiers,alerts"}),
    )
    assert everything.returncode == 0 and by_name.returncode == 0, by_name.stderr
    for listed in (everything, by_name):
        assert "None" not in listed.stdout and "unpackaged" not in listed.stdout, listed.stdout
        for line in listed.stdout.splitlines():
            assert ", enabled): " in line or ", disabled): " in line, line
    named = {line.split(" (")[0]: line for line in by_name.stdout.splitlines()}
    assert named["tiers"].startswith("tiers (billfold-tiers 0.1.0, enabled): ")
    assert named["stripe"].startswith("stripe (billfold-stripe 0.1.0, disabled)")
    listed_json = await cli("plugins", "list", "--json", url=url, env={"BILLFOLD_PLUGINS": "tiers,alerts"})
    tiers = next(p for p in json.loads(listed_json.stdout) if p["name"] == "tiers")
    assert (tiers["distribution"], tiers["version"], tiers["enabled"]) == ("billfold-tiers", "0.1.0", True)
    assert "billfold_routes" in tiers["hooks"]


async def test_json_is_marked_optional_in_every_help(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/unused.db"
    commands = [
        ("orgs", "create"),
        ("keys", "create"),
        ("ledger", "adjust"),
        ("month", "close"),
        ("plugins", "list"),
        ("operator-keys", "create"),
        ("operator-keys", "list"),
        ("audit",),
    ]
    helped = await asyncio.gather(*[cli(*command, "--help", url=url) for command in commands])
    for command, answer in zip(commands, helped, strict=True):
        assert answer.returncode == 0, (command, answer.stderr)
        text = " ".join(answer.stdout.split())
        assert "--json Optional" in text, (command, answer.stdout)
