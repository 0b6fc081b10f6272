"""Live config: ``billfold serve`` and ``billfold worker`` reload billing.yaml on SIGHUP.

The server runs under uvicorn's process supervisor (even with one worker). On SIGHUP the
supervisor first validates the file the way start-up does (every section, every plugin's section);
an invalid file is refused with its key path and line and the running workers keep the old config.
A valid one replaces the workers one by one: each replacement starts with the new config and is
ready before the worker it replaces is asked to finish its requests and stop. The listening socket
belongs to the supervisor, so a connection made during the swap waits in its backlog instead of
being refused: no request is dropped.

Why replace workers rather than swap a config object inside them: every service is built once by
the composition root with its own config section (prices, plans, caps, plugin sections, the
payment provider, the rate limiter), and a plugin may keep what it derived from its section. A
fresh process gives all of them, the plugins included, exactly the state a cold start gives, so a
reload can never leave half of the services on the old prices. A price change therefore applies to
the events accepted after the replacement is ready; events already accepted keep the price they
were charged (prices are never recomputed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

logger = logging.getLogger("uvicorn.error")  # the supervisor logs through uvicorn's handlers
worker_logger = logging.getLogger("billfold.worker")


def check_config() -> str | None:
    """Validate billing.yaml (``$BILLFOLD_CONFIG``) as start-up does, every plugin's section
    included (``billfold config check``); the problem with its key path and line, or None."""
    from billfold.config.loader import ConfigError, default_config_path, load_config
    from billfold.plugins import create_plugin_manager, validate_plugin_configs

    try:
        loaded, lines = load_config()
        validate_plugin_configs(
            create_plugin_manager(), loaded.plugins, lines=lines, source=str(default_config_path())
        )
    except ConfigError as exc:
        return str(exc)
    return None


class ReloadingSupervisor(Multiprocess):
    """uvicorn's supervisor, whose SIGHUP first checks the new config."""

    def handle_hup(self) -> None:
        problem = check_config()
        if problem is not None:
            logger.error("config reload refused, the running config stays in force: %s", problem)
            return
        logger.info("config is valid: replacing the workers one by one")
        before = list(self.processes)
        self.restart_all()
        if any(process in before for process in self.processes):
            logger.error("config reload stopped: a new worker did not start; the others keep the old config")
            return
        logger.info("config reloaded: every worker runs the new config")


def run_server(app: str, **options: Any) -> None:
    """``uvicorn.run`` for an import string, under :class:`ReloadingSupervisor` at any worker count."""
    # a replacement worker builds the whole app (imports, plugins) before it is ready: give it time
    config = uvicorn.Config(app, timeout_worker_healthcheck=60, **options)
    sock = config.bind_socket()
    ReloadingSupervisor(config, sockets=[sock]).run()


def worker_reload_on_hup(stop: asyncio.Event) -> None:
    """``billfold worker``: on SIGHUP validate the config; when valid, set ``stop`` (the worker
    finishes its round and stops) and mark the process for :func:`reexec_if_asked`."""

    def on_hup() -> None:
        problem = check_config()
        if problem is not None:
            worker_logger.error("config reload refused, the running config stays in force: %s", problem)
            return
        worker_logger.info("config is valid: restarting the worker with it")
        os.environ["BILLFOLD_WORKER_REEXEC"] = "1"
        stop.set()

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_hup)
    worker_logger.info("worker running (pid %d); SIGHUP reloads the config", os.getpid())


def reexec_if_asked() -> None:
    """Replace this process with a fresh one (same command line) after a valid SIGHUP."""
    if os.environ.pop("BILLFOLD_WORKER_REEXEC", None) == "1":
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
