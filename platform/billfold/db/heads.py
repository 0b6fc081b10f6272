"""Is the database at the head of every migration branch? A fast check for the command line.

Importing Alembic costs more than most commands take. When each distribution's scripts have one
head, named by the plain ``revision = "..."`` / ``down_revision = "..."`` lines Alembic's script
template writes, and every version table holds exactly that head, nothing is missing. Anything
else (a merge, an unusual script, a missing table, another revision) answers False, and the caller
asks Alembic itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

CORE_MIGRATIONS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r"""^revision(?:\s*:\s*[\w\[\], |]+)?\s*=\s*["']([\w.-]+)["']\s*$""", re.M)
_DOWN = re.compile(r"""^down_revision(?:\s*:\s*[\w\[\], |]+)?\s*=\s*(?:None|["']([\w.-]+)["'])\s*$""", re.M)
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def script_head(location: Path) -> str | None:
    """The single head of the scripts under ``location/versions``, or None when it is not plain."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (location / "versions").glob("*.py"):
        source = script.read_text()
        revision = _REVISION.findall(source)
        down = _DOWN.findall(source)
        if len(revision) != 1 or len(down) != 1:
            return None
        revisions.add(revision[0])
        if down[0]:
            parents.add(down[0])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


async def at_head(engine: AsyncEngine, branches: Iterable[tuple[str, Path]]) -> bool:
    """True when every (version table, script location) branch is recorded at its single head."""
    wanted = []
    for table, location in branches:
        head = script_head(location)
        if head is None or not _TABLE.fullmatch(table):
            return False
        wanted.append((table, head))
    try:
        async with engine.connect() as conn:
            for table, head in wanted:
                stored = (await conn.execute(text(f"SELECT version_num FROM {table}"))).scalars().all()
                if list(stored) != [head]:
                    return False
    except Exception:  # no version table yet, or another schema: Alembic decides
        return False
    return True
