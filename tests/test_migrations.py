"""The migrations agree with the models: a database upgraded to head has exactly the schema the
models declare (alembic's autogenerate comparison finds nothing), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Identity, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import billfold.db.models  # noqa: F401  (every table on the metadata)
from billfold.db import metadata
from billfold.db.migrate import alembic_config, current_revision, upgrade


def _sqlite_declared_types(conn: Connection) -> dict[tuple[str, str], str]:
    declared = {}
    for table in metadata.tables:
        for row in conn.exec_driver_sql(f'PRAGMA table_info("{table}")'):
            declared[(table, row[1])] = row[2].upper()
    return declared


def _differences(conn: Connection) -> list[Any]:
    """alembic's comparison of the live schema with the models.

    SQLite does not round-trip some declared types through reflection (BINARY(16), the UUID
    storage, comes back as NUMERIC): there each column's declared DDL type is compared with the
    model's type compiled for SQLite instead, which is stricter than the reflected comparison."""
    opts: dict[str, Any] = {
        "compare_type": True,
        "compare_server_default": True,
        # the core's tables: the plugins' (and their version tables) are their own branches'
        "include_name": lambda name, type_, _parent: type_ != "table" or name in metadata.tables,
    }
    if conn.dialect.name == "sqlite":
        declared = _sqlite_declared_types(conn)

        def compare_type(_ctx, inspected_column, metadata_column, _inspected, metadata_type) -> bool:
            compiled = metadata_type.compile(dialect=conn.dialect).upper()
            return declared.get((metadata_column.table.name, metadata_column.name)) != compiled

        opts["compare_type"] = compare_type
    diffs = compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)
    if conn.dialect.name == "sqlite":
        # SQLite has no identity columns: an INTEGER PRIMARY KEY is the rowid, checked below.
        diffs = [
            d
            for d in diffs
            if not (isinstance(d, list) and d[0][0] == "modify_default" and isinstance(d[0][-1], Identity))
        ]
    return diffs


async def _run(url: str, fn) -> Any:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _head() -> str:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"the migrations have several heads: {heads}"
    return heads[0]


async def test_sqlite_schema_matches_the_models(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    await asyncio.to_thread(upgrade, url)
    assert await _run(url, _differences) == []

    def identity_columns_are_rowids(conn: Connection) -> None:
        for table in metadata.sorted_tables:
            for column in table.columns:
                if column.identity is not None:
                    info = {r[1]: r for r in conn.exec_driver_sql(f'PRAGMA table_info("{table.name}")')}
                    assert info[column.name][2] == "INTEGER" and info[column.name][5] == 1, (
                        table.name,
                        column.name,
                    )

    await _run(url, identity_columns_are_rowids)


async def test_postgres_schema_matches_the_models(postgres_database: str | None):
    if postgres_database is None:
        pytest.skip("needs BILLFOLD_TEST_POSTGRES_URL")
    assert await _run(postgres_database, _differences) == []


async def test_sentinel_columns_are_in_both(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    await asyncio.to_thread(upgrade, url)
    modelled = {t.name for t in metadata.sorted_tables if "sa_orm_sentinel" in t.columns}
    assert modelled, "advanced-alchemy's sentinel columns are expected on the UUID tables"

    def live(conn: Connection) -> set[str]:
        inspector = inspect(conn)
        return {
            t
            for t in inspector.get_table_names()
            if "sa_orm_sentinel" in {c["name"] for c in inspector.get_columns(t)}
        }

    assert await _run(url, live) == modelled


async def test_upgrade_reaches_the_single_head_and_downgrade_round_trips(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_async_engine(url)
    try:
        assert await current_revision(engine) == _head()
    finally:
        await engine.dispose()

    def tables(conn: Connection) -> set[str]:
        return set(inspect(conn).get_table_names())

    assert await _run(url, tables) == {*metadata.tables, "alembic_version"}
    await asyncio.to_thread(command.downgrade, alembic_config(url), "base")
    assert await _run(url, tables) == {"alembic_version"}
    await asyncio.to_thread(upgrade, url)
    assert await _run(url, tables) == {*metadata.tables, "alembic_version"}
    assert await _run(url, _differences) == []


async def test_the_test_databases_are_migrated_to_head(database_url: str):
    def revision(conn: Connection) -> str:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()

    assert await _run(database_url, revision) == _head()


async def test_the_comparison_notices_drift(tmp_path: Path):
    """The check above is not vacuous: a schema that drifted from the models is reported."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'drift.db'}"
    await asyncio.to_thread(upgrade, url)

    def drift(conn: Connection) -> list[Any]:
        conn.exec_driver_sql("ALTER TABLE ledger_accounts ADD COLUMN stray INTEGER")
        conn.exec_driver_sql("DROP INDEX ix_ledger_entries_org_id_id")
        # a column declared with another type than the model's (SQLite cannot ALTER a type)
        conn.exec_driver_sql("DROP TABLE provider_events")
        conn.exec_driver_sql(
            "CREATE TABLE provider_events (provider VARCHAR(32) NOT NULL, event_id TEXT NOT NULL, "
            "type VARCHAR(100) NOT NULL, received_at DATETIME NOT NULL, PRIMARY KEY (provider, event_id))"
        )
        return _differences(conn)

    found = await _run(url, drift)
    flat = [d[0] if isinstance(d, list) else d for d in found]
    assert any(d[0] == "remove_column" and d[2] == "ledger_accounts" for d in flat), found
    assert any(d[0] == "add_index" and d[1].name == "ix_ledger_entries_org_id_id" for d in flat), found
    assert any(d[0] == "modify_type" and (d[2], d[3]) == ("provider_events", "event_id") for d in flat), found
