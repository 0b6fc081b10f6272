"""Tables of a plugin: advanced-alchemy's model bases, one MetaData per plugin, its migrations.

A plugin's models set ``__bind_key__ = "<plugin name>"``, which puts their tables on that plugin's
own MetaData (same naming convention as the core's); its Alembic ``env.py`` is one call,
``run_plugin_migrations(plugin_metadata("<plugin name>"))``.
"""

from __future__ import annotations

from advanced_alchemy.base import DefaultBase as ModelBase
from advanced_alchemy.base import IdentityAuditBase as IdentityModel
from advanced_alchemy.base import UUIDv7AuditBase as UUIDModel
from advanced_alchemy.base import metadata_registry
from sqlalchemy import MetaData

__all__ = ["IdentityModel", "ModelBase", "UUIDModel", "plugin_metadata", "run_plugin_migrations"]


def run_plugin_migrations(target_metadata: MetaData) -> None:
    """The body of a plugin's Alembic ``env.py`` (Alembic is imported only when migrations run)."""
    from billfold.db.migrate import run_env

    run_env(target_metadata)


def plugin_metadata(name: str) -> MetaData:
    """The MetaData of the tables whose models say ``__bind_key__ = name``."""
    return metadata_registry.get(name)
