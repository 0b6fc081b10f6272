"""Alembic environment of the core: its tables, in the version table `alembic_version`."""

from __future__ import annotations

import billfold.db.models  # noqa: F401  (registers every table on the metadata)
from billfold.db import metadata
from billfold.db.migrate import run_env

run_env(metadata)
