"""Shared fixtures: a migrated database per test (SQLite file, or PostgreSQL when
BILLFOLD_TEST_POSTGRES_URL names a server), the app over HTTP, and helpers to make tenants."""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("BILLFOLD_ADMIN_API_KEY", "admin_test_key")
os.environ.pop("BILLFOLD_DATABASE_URL", None)
os.environ.pop("BILLFOLD_PLUGINS", None)

import asyncpg
import httpx
import yaml
from sqlalchemy import text

from billfold import clock
from billfold.api.app import Billfold, create_app
from billfold.cli_support import migration_sources
from billfold.config import load_config_text
from billfold.db.migrate import Source, upgrade

ADMIN_KEY = os.environ["BILLFOLD_ADMIN_API_KEY"]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ROOT = Path(__file__).resolve().parent.parent
BASE_CONFIG = (ROOT / "config" / "billing.yaml").read_text()
POSTGRES_URL = os.environ.get("BILLFOLD_TEST_POSTGRES_URL")

TEST_OVERRIDES: dict[str, Any] = {
    "worker": {"in_process": False},
    "rate_limits": {"enabled": False},
    "auth": {"key_cache_seconds": 0, "key_cache_notified_seconds": 0},
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
    raw = yaml.safe_load(
        BASE_CONFIG.replace("${BILLFOLD_DATABASE_URL:-sqlite+aiosqlite:///billfold.db}", database_url)
    )
    data = deep_merge(deep_merge(raw, TEST_OVERRIDES), overrides or {})
    data["database"]["url"] = database_url
    return yaml.safe_dump(data)


# -- databases ---------------------------------------------------------------------------------


def plugin_sources(url: str) -> list[Source]:
    """The installed plugins' migration scripts (the test databases carry their tables too)."""
    config, lines = load_config_text(config_text(None, database_url=url), source="test.yaml")
    app = Billfold(config, lines=lines, source="test.yaml")
    try:
        return migration_sources(app)
    finally:
        asyncio.run(app.engine.dispose())


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
    upgrade(url, sources=plugin_sources(url))
    yield url.replace("postgresql://", "postgresql+asyncpg://")
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "billfold.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url, sources=plugin_sources(url))
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
            # every table, the plugins' included (their MetaData is filled only when imported)
            names = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename NOT LIKE 'alembic_version%'"
            )
            tables = ", ".join(f'"{row["tablename"]}"' for row in names)
            await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()

    asyncio.run(truncate())
    yield postgres_database


@pytest.fixture(autouse=True)
def real_business_time() -> Iterator[None]:
    """Each test starts on the real clock; one that moves the business clock leaves it there."""
    clock.set_offset(datetime.timedelta(0))
    yield
    clock.set_offset(datetime.timedelta(0))


@pytest.fixture
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")


# -- the app -----------------------------------------------------------------------------------


@pytest.fixture
def make_state(database_url: str) -> Callable[..., Billfold]:
    def make(overrides: dict[str, Any] | None = None, **kwargs: Any) -> Billfold:
        config, lines = load_config_text(
            config_text(overrides, database_url=database_url), source="test.yaml"
        )
        return Billfold(config, lines=lines, source="test.yaml", **kwargs)

    return make


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    """Override in a test module to change the app's config."""
    return {}


@pytest.fixture
async def state(
    make_state: Callable[..., Billfold], config_overrides: dict[str, Any]
) -> AsyncIterator[Billfold]:
    app_state = make_state(config_overrides)
    yield app_state
    await app_state.engine.dispose()


@asynccontextmanager
async def open_client(app_state: Billfold) -> AsyncIterator[httpx.AsyncClient]:
    """The real app over HTTP, served in the test's own event loop.

    Litestar's AsyncTestClient runs the app in a portal thread with another event loop and blocks
    the caller on every request: concurrent requests would run one at a time, and pooled asyncpg
    connections would be shared between two loops. httpx's ASGITransport runs requests as
    coroutines of this loop, so ``asyncio.gather`` really interleaves them (on PostgreSQL they
    contend on the same rows from many pooled connections)."""
    app = create_app(app_state)
    started = asyncio.Event()
    stop = asyncio.Event()

    async def lifespan() -> None:
        # One task enters and leaves the lifespan (it holds an anyio task group), whichever tasks
        # pytest-asyncio uses for a fixture's setup and teardown.
        async with app.lifespan():
            started.set()
            await stop.wait()

    host = asyncio.create_task(lifespan())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({host, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        waiter.cancel()
        error = host.exception()
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]  # the lifespan's task group wraps a start-up failure
        assert error is not None
        raise error
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local", timeout=60
        ) as test_client:
            yield test_client
    finally:
        stop.set()
        await host


@pytest.fixture
async def client(state: Billfold) -> AsyncIterator[httpx.AsyncClient]:
    async with open_client(state) as test_client:
        yield test_client


class Tenant:
    def __init__(self, org_id: str, api_key: str, currency: str) -> None:
        self.org_id = org_id
        self.api_key = api_key
        self.currency = currency
        self.headers = {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def new_tenant(client: httpx.AsyncClient) -> Callable[..., Any]:
    async def make(*, currency: str = "usd", balance: int = 0, name: str = "Acme") -> Tenant:
        response = await client.post(
            "/v1/admin/organizations", json={"name": name, "currency": currency}, headers=ADMIN
        )
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


async def verify(state: Billfold) -> list[Any]:
    from billfold.ledger.verify import verify_ledger

    async with state.engine.connect() as conn:
        return await verify_ledger(conn)


async def count_rows(state: Billfold, table: str) -> int:
    async with state.engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def minor_balance(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    """GET /v1/billing/balance (document 004: major units, upper-case currency) read back in minor
    units, the way the ledger keeps them."""
    response = await client.get("/v1/billing/balance", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    return {
        "free": round(body["free"] * 100),
        "reserved": round(body["reserved"] * 100),
        "total": round(body["total"] * 100),
        "currency": body["currency"].lower(),
    }


# -- the command line --------------------------------------------------------------------------

BILLFOLD_CLI = Path(sys.executable).parent / "billfold"


def run_cli(
    *args: str, database_url: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed `billfold` console script against ``database_url`` (from the repo root)."""
    environ = {**os.environ, "BILLFOLD_DATABASE_URL": database_url, "BILLFOLD_CONFIG": "config/billing.yaml"}
    environ.pop("BILLFOLD_PLUGINS", None)
    environ.update(env or {})
    return subprocess.run(
        [str(BILLFOLD_CLI), *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- assertions --------------------------------------------------------------------------------


TAGS_002 = {
    400: "BadRequest",
    401: "Unauthorized",
    402: "PaymentRequired",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    413: "BadRequest",
    415: "BadRequest",
    422: "BadRequest",
    429: "TooManyRequests",
}


def assert_error(
    response: httpx.Response, status: int, code: str | None = None, *, field: str | None = None
) -> dict[str, Any]:
    """Check the error envelope and return the body.

    Every error carries trackingId and a message, with the tracking id again in the X-Tracking-Id
    header. Billfold's envelope has code and message at the top level and again under ``error``;
    document 004's routes answer ``{error: <code>, message, details}``; document 002's answer the
    product's tagged errors ``{_tag, message}``, which carry no code (``tag=`` checks them)."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    body: dict[str, Any] = response.json()
    assert body["trackingId"].startswith("trk_"), body
    assert response.headers["X-Tracking-Id"] == body["trackingId"]
    assert isinstance(body["message"], str) and body["message"], body
    if "_tag" in body:
        assert code is None, f"document 002's errors carry no code, only _tag: {body}"
        assert (
            body["_tag"] == TAGS_002.get(status, "InternalError") or body["_tag"] == "HttpApiDecodeError"
        ), body
        if field is not None:
            assert body["issues"][0]["path"] == field.split("."), body
        return body
    if isinstance(body.get("error"), str):
        if code is not None:
            assert body["error"] == code, body
        if field is not None:
            assert body["details"] and body["details"][0].get("field") == field, body
        return body
    assert isinstance(body["code"], str) and body["code"], body
    assert isinstance(body["message"], str) and body["message"], body
    assert body["error"]["code"] == body["code"]
    assert body["error"]["message"] == body["message"]
    if code is not None:
        assert body["code"] == code, body
    if field is not None:
        assert body["error"].get("field") == field, body
    return body


@pytest.fixture
def receiver() -> Iterator[Any]:
    """A webhook receiver on 127.0.0.1 that checks every signature it gets (the alerts plugin's
    tests; ``alerts_support.Receiver``)."""
    from alerts_support import Receiver

    started = Receiver().start()
    yield started
    started.stop()
    assert started.failures == [], started.failures
