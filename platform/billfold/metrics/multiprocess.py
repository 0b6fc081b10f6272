"""The directory where several server processes keep their counts (prometheus_client's
multiprocess mode), set up by ``billfold serve`` before its workers start.

prometheus_client reads ``PROMETHEUS_MULTIPROC_DIR`` when it is first imported: the variable must
be in the environment before a worker imports it, and the directory must hold no file of an earlier
run (its counts would be added to this one's)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def multiprocess_directory(enabled: bool = True) -> Iterator[Path | None]:
    """While the server runs: a fresh, empty directory named by ``PROMETHEUS_MULTIPROC_DIR``,
    removed after. ``billfold serve`` runs its workers as child processes, even one (a config
    reload replaces them): the counts of every worker, the replaced ones included, are summed at
    each scrape. An operator's own ``PROMETHEUS_MULTIPROC_DIR`` is used as it is, emptied of the
    ``*.db`` files of an earlier run first. ``enabled`` false (no metrics): nothing."""
    if not enabled:
        yield None
        return
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="billfold-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)
