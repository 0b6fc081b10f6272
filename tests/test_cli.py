"""The `billfold` command line, run as the installed console script in a subprocess against a
fresh SQLite file (BILLFOLD_DATABASE_URL) with config/billing.yaml."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from conftest import config_text, open_client, run_cli

from billfold.config import load_config_text
from billfold.state import AppState


@pytest.fixture
def cli_db(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "cli.db"
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
        cli("ledger", "adjust", "--org", org["id"], "--amount-cents", "500", "--description", "x", "--json", url=url),
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
    state = AppState(config, lines=lines)
    async with open_client(state) as client:
        for api_key in (org["api_key"], issued["api_key"]):
            response = await client.get("/v1/billing/balance", headers={"Authorization": f"Token {api_key}"})
            assert response.status_code == 200, response.text
            assert response.json() == {"free": 500, "reserved": 0, "total": 500, "currency": "usd"}
        transactions = (
            await client.get("/v1/billing/transactions", headers={"Authorization": f"Bearer {org['api_key']}"})
        ).json()["data"]
        assert [(t["kind"], t["amount_cents"], t["description"]) for t in transactions] == [("adjustment", 500, "x")]

    verified = await cli("ledger", "verify", url=url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ledger ok" in verified.stdout

    # corrupt the cached balance behind the ledger's back: verify must notice and say where
    with sqlite3.connect(path) as db:
        db.execute("UPDATE ledger_accounts SET free_cents = free_cents + 1")
    broken = await cli("ledger", "verify", url=url)
    assert broken.returncode == 1
    assert "invariant violation" in broken.stderr
    assert "balance_equals_entries" in broken.stderr
    assert org["id"] in broken.stderr
    assert "free+reserved=501, entries sum=500" in broken.stderr
    assert "Traceback" not in broken.stderr

    revoked = await cli("keys", "revoke", issued["id"], url=url)
    assert revoked.returncode == 0, revoked.stderr
    state = AppState(config, lines=lines)
    async with open_client(state) as client:
        gone = await client.get("/v1/billing/balance", headers={"Authorization": f"Bearer {issued['api_key']}"})
        assert gone.status_code == 401


async def test_ledger_verify_reports_a_broken_hold_and_running_balance(cli_db):
    path, url = cli_db
    assert (await cli("db", "upgrade", url=url)).returncode == 0
    org = json.loads((await cli("orgs", "create", "--name", "N", "--json", url=url)).stdout)
    assert (await cli("ledger", "adjust", "--org", org["id"], "--amount-cents", "900", "--description", "a", url=url)).returncode == 0
    with sqlite3.connect(path) as db:
        # an entry whose amount no longer matches its running balance, and an account that agrees
        db.execute("UPDATE ledger_entries SET amount_cents = amount_cents + 7")
        db.execute("UPDATE ledger_accounts SET free_cents = free_cents + 7")
    broken = await cli("ledger", "verify", url=url)
    assert broken.returncode == 1
    assert "running_balance_chain" in broken.stderr


async def test_production_keys_are_live_keys(cli_db):
    _, url = cli_db
    assert (await cli("db", "upgrade", url=url)).returncode == 0
    env = {"BILLFOLD_ENV": "production"}
    created = await cli("orgs", "create", "--name", "Live Co", "--json", url=url, env=env)
    assert created.returncode == 0, created.stderr
    org = json.loads(created.stdout)
    assert org["api_key"].startswith("sk_live_")
    key = await cli("keys", "create", "--org", org["id"], "--json", url=url, env=env)
    assert json.loads(key.stdout)["api_key"].startswith("sk_live_")
    assert json.loads(key.stdout)["prefix"].startswith("sk_live_")


async def test_errors_are_reported_without_tracebacks(cli_db):
    _, url = cli_db
    assert (await cli("db", "upgrade", url=url)).returncode == 0
    unknown_org, bad_currency, zero, bad_uuid = await asyncio.gather(
        cli("ledger", "adjust", "--org", str(uuid.uuid4()), "--amount-cents", "5", "--description", "x", url=url),
        cli("orgs", "create", "--name", "X", "--currency", "gbp", url=url),
        cli("ledger", "adjust", "--org", str(uuid.uuid4()), "--amount-cents", "0", "--description", "x", url=url),
        cli("keys", "create", "--org", "not-a-uuid", url=url),
    )
    assert unknown_org.returncode == 1
    assert "account_not_found" in unknown_org.stderr
    assert bad_currency.returncode == 1
    assert "invalid_currency" in bad_currency.stderr
    assert zero.returncode == 1
    assert "amount_cents" in zero.stderr
    assert bad_uuid.returncode == 2  # click's usage error
    for result in (unknown_org, bad_currency, zero, bad_uuid):
        assert "Traceback" not in result.stderr


async def test_plugins_list(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/unused.db"
    text, as_json = await asyncio.gather(cli("plugins", "list", url=url), cli("plugins", "list", "--json", url=url))
    assert text.returncode == 0, text.stderr
    assert "billfold.payments.hooks (default)" in text.stdout
    assert "billfold_organization_created" in text.stdout
    assert as_json.returncode == 0, as_json.stderr
    described = json.loads(as_json.stdout)
    by_name = {p["name"]: p for p in described}
    assert by_name["billfold.payments.hooks"]["default"] is True
    assert "billfold_balance_watermarks" in by_name["billfold.payments.hooks"]["hooks"]
    # installed plugins come from their distribution's entry point
    stripe = by_name.get("stripe")
    assert stripe is not None
    assert stripe["distribution"] == "billfold-stripe"
    assert stripe["default"] is False


async def test_version_and_help(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/unused.db"
    version, helped = await asyncio.gather(cli("--version", url=url), cli("--help", url=url))
    assert version.returncode == 0
    assert "0.1.0" in version.stdout
    assert helped.returncode == 0
    for command in ("serve", "worker", "config", "db", "orgs", "keys", "ledger", "plugins"):
        assert command in helped.stdout
