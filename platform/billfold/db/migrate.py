"""Apply migrations: the core's, then each enabled plugin's, each in its own version table.

Every distribution ships its own Alembic scripts (``billfold_migrations``) and keeps its own version
table (``alembic_version`` for the core, ``alembic_version_<name>`` for a plugin), so each is its own
branch: a plugin disabled or uninstalled later leaves its table behind and never makes an upgrade
of the others fail (with one shared table, Alembic refuses to run when a recorded revision's
scripts are gone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec
from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.config import AlembicAsyncConfig, SQLAlchemyAsyncConfig
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from billfold.db.engine import normalise_url

MIGRATIONS = Path(__file__).parent / "migrations"
CORE = "core"
CORE_VERSION_TABLE = "alembic_version"


class Source(msgspec.Struct, frozen=True):
    """One distribution's scripts and version table."""

    name: str
    script_location: Path

    @property
    def version_table(self) -> str:
        return CORE_VERSION_TABLE if self.name == CORE else f"alembic_version_{self.name}"


class Applied(msgspec.Struct, frozen=True):
    """What an upgrade did to one distribution's branch."""

    name: str
    before: str | None
    after: str | None
    revisions: list[str]

    def describe(self) -> str:
        if not self.revisions:
            return f"{self.name}: up to date at {self.after or 'no revision'}"
        return f"{self.name}: {self.before or 'empty'} -> {self.after} (applied {', '.join(self.revisions)})"


CORE_SOURCE = Source(name=CORE, script_location=MIGRATIONS)


def alembic_config(url: str, source: Source = CORE_SOURCE) -> Config:
    config = Config()
    config.set_main_option("script_location", str(source.script_location))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    config.attributes["version_table"] = source.version_table
    return config


def _pending(config: Config, before: str | None, target: str) -> list[str]:
    script = ScriptDirectory.from_config(config)
    walked = script.iterate_revisions(target, before or "base")
    return [rev.revision for rev in reversed(list(walked))]


def commands(url: str, source: Source = CORE_SOURCE) -> AlembicCommands:
    """advanced-alchemy's Alembic commands for one distribution: its scripts, its version table,
    an engine made the way Billfold makes them (SQLite pragmas included)."""
    from billfold.config import DatabaseConfig
    from billfold.db.engine import create_engine

    return AlembicCommands(
        sqlalchemy_config=SQLAlchemyAsyncConfig(
            engine_instance=create_engine(DatabaseConfig(url=url)),
            alembic_config=AlembicAsyncConfig(
                script_location=str(source.script_location),
                version_table_name=source.version_table,
                script_config=str(source.script_location / "alembic.ini"),  # none: configured here
            ),
        )
    )


def upgrade(url: str, revision: str = "head", *, sources: Iterable[Source] = ()) -> list[Applied]:
    """Bring the database at ``url`` to ``revision`` for the core, and to head for each plugin
    source (blocking; not inside a running loop). Returns what was applied, per distribution."""
    applied = []
    for source in (CORE_SOURCE, *sources):
        target = revision if source.name == CORE else "head"
        before = asyncio.run(_current(url, source))
        pending = _pending(alembic_config(url, source), before, target) if target == "head" else []
        commands(url, source).upgrade(target)
        after = asyncio.run(_current(url, source))
        applied.append(
            Applied(
                name=source.name, before=before, after=after, revisions=pending if before != after else []
            )
        )
    return applied


async def upgrade_async(url: str, revision: str = "head", *, sources: Sequence[Source] = ()) -> list[Applied]:
    return await asyncio.to_thread(upgrade, url, revision, sources=sources)


def revision(url: str, message: str) -> None:
    command.revision(alembic_config(url), message=message, autogenerate=True)


async def _current(url: str, source: Source) -> str | None:
    engine = create_async_engine(normalise_url(url))
    try:
        return await current_revision(engine, source)
    finally:
        await engine.dispose()


async def current_revision(engine: AsyncEngine, source: Source = CORE_SOURCE) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(
                sync, opts={"version_table": source.version_table}
            ).get_current_revision()
        )


def head_revision(source: Source = CORE_SOURCE) -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://", source)).get_current_head()


async def missing(engine: AsyncEngine, sources: Iterable[Source] = ()) -> list[str]:
    """The distributions whose database schema is behind their scripts (empty: up to date)."""
    behind = []
    for source in (CORE_SOURCE, *sources):
        if await current_revision(engine, source) != head_revision(source):
            behind.append(source.name)
    return behind


def run_env(target_metadata: MetaData) -> None:
    """The body of a distribution's ``env.py``: run its migrations on the configured database,
    in its own version table (set by :func:`upgrade`), comparing only its own tables."""
    from alembic import context
    from sqlalchemy.engine import Connection

    config = context.config
    # advanced-alchemy's AlembicCommands hands over its engine and version table as attributes of
    # the config; plain Alembic configs (tests, revision) carry them in `attributes`
    version_table = getattr(config, "version_table_name", None) or config.attributes.get(
        "version_table", CORE_VERSION_TABLE
    )

    def include_name(name: str | None, type_: str, _parents: object) -> bool:
        return name in target_metadata.tables if type_ == "table" else True

    def configure(connection: Connection | None = None, **kwargs: object) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=version_table,
            include_name=include_name,
            compare_type=True,
            render_as_batch=True,
            **kwargs,  # type: ignore[arg-type]
        )

    if context.is_offline_mode():
        configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    def run(connection: Connection) -> None:
        configure(connection)
        with context.begin_transaction():
            context.run_migrations()

    async def online() -> None:
        connectable = config.attributes.get("connection")
        if connectable is not None:
            await connectable.run_sync(run)
            return
        engine = getattr(config, "engine", None) or create_async_engine(
            config.get_main_option("sqlalchemy.url") or ""
        )
        async with engine.connect() as connection:
            await connection.run_sync(run)
            await connection.commit()
        await engine.dispose()

    asyncio.run(online())
