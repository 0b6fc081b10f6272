"""Shared fixtures: a migrated database per test (SQLite file, or PostgreSQL when
BILLFOLD_TEST_POSTGRES_URL names a server), the app over HTTP, and helpers to make tenants."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("BILLFOLD_ADMIN_API_KEY", "admin_test_key")
os.environ.pop("BILLFOLD_DATABASE_URL", None)
os.environ.pop("BILLFOLD_PLUGINS", None)

import asyncpg  # noqa: E402
import yaml  # noqa: E402
from litestar.testing import AsyncTestClient  # noqa: E402
from sqlalchemy import text  # noqa: E402

from billfold.api.app import create_app  # noqa: E402
from billfold.config import load_config_text  # noqa: E402
from billfold.db import metadata  # noqa: E402
from billfold.db.migrate import upgrade  # noqa: E402
from billfold.state import AppState  # noqa: E402

ADMIN_KEY = os.environ["BILLFOLD_ADMIN_API_KEY"]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ROOT = Path(__file__).resolve().parent.parent
BASE_CONFIG = (ROOT / "config" / "billing.yaml").read_text()
POSTGRES_URL = os.environ.get("BILLFOLD_TEST_POSTGRES_URL")

TEST_OVERRIDES: dict[str, Any] = {
    "worker": {"in_process": False},
    "rate_limits": {"enabled": False},
    "auth": {"key_cache_seconds": 0},
}


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_text(overrides: dict[str, Any] | None = None, *, database_url: str) -> str:
    raw = yaml.safe_load(BASE_CONFIG.replace("${BILLFOLD_DATABASE_URL:-sqlite+aiosqlite:///billfold.db}", database_url))
    data = deep_merge(deep_merge(raw, TEST_OVERRIDES), overrides or {})
    data["database"]["url"] = database_url
    return yaml.safe_dump(data)


# -- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str | None]:
    """A fresh PostgreSQL database for this test process, migrated once; None on SQLite runs."""
    if not POSTGRES_URL:
        yield None
        return
    name = f"billfold_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    server = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = server.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    yield url.replace("postgresql://", "postgresql+asyncpg://")
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "billfold.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def database_url(postgres_database: str | None, sqlite_template: Path, tmp_path: Path) -> Iterator[str]:
    if postgres_database is None:
        path = tmp_path / "billfold.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return

    async def truncate() -> None:
        conn = await asyncpg.connect(postgres_database.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()

    asyncio.run(truncate())
    yield postgres_database


@pytest.fixture
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")


# -- the app -----------------------------------------------------------------------------------


@pytest.fixture
def make_state(database_url: str) -> Callable[..., AppState]:
    def make(overrides: dict[str, Any] | None = None, **kwargs: Any) -> AppState:
        config, lines = load_config_text(config_text(overrides, database_url=database_url), source="test.yaml")
        return AppState(config, lines=lines, source="test.yaml", **kwargs)

    return make


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    """Override in a test module to change the app's config."""
    return {}


@pytest.fixture
async def state(make_state: Callable[..., AppState], config_overrides: dict[str, Any]) -> AppState:
    return make_state(config_overrides)


@pytest.fixture
async def client(state: AppState) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(state)
    async with AsyncTestClient(app=app, timeout=60) as test_client:
        yield test_client


class Tenant:
    def __init__(self, org_id: str, api_key: str, currency: str) -> None:
        self.org_id = org_id
        self.api_key = api_key
        self.currency = currency
        self.headers = {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def new_tenant(client: AsyncTestClient[Any]) -> Callable[..., Any]:
    async def make(*, currency: str = "usd", balance: int = 0, name: str = "Acme") -> Tenant:
        response = await client.post("/v1/admin/organizations", json={"name": name, "currency": currency}, headers=ADMIN)
        assert response.status_code == 201, response.text
        body = response.json()
        tenant = Tenant(body["id"], body["api_key"], currency)
        if balance:
            adjusted = await client.post(
                f"/v1/admin/organizations/{tenant.org_id}/adjustments",
                json={"amount_cents": balance, "description": "opening balance"},
                headers=ADMIN,
            )
            assert adjusted.status_code == 201, adjusted.text
        return tenant

    return make


@pytest.fixture
async def tenant(new_tenant: Callable[..., Any]) -> Tenant:
    result: Tenant = await new_tenant()
    return result


async def verify(state: AppState) -> list[Any]:
    from billfold.ledger.verify import verify_ledger

    async with state.engine.connect() as conn:
        return await verify_ledger(conn)


async def count_rows(state: AppState, table: str) -> int:
    async with state.engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())
