"""What the per-request access line costs: CPU µs per request with ``logging.requests`` on and off,
in text and in JSON.

    uv run python bench/access_log.py [--n 20000] [--rounds 5] [--app-n 1000] [--app-rounds 20]
                                      [--alternatives]

Everything runs in this one process on uvloop, one request at a time, and reports CPU time per
request (``time.process_time``: every thread of the process, so the work a logging thread does
after the request counts too; each measurement ends only when every line is written). The
settings are measured in turn, round after round, and the medians reported (the machine's other
load moves single figures by several µs):

  * middleware: Billfold's :class:`~billfold.logs.AccessLog` around an ASGI app that answers 200
    at once (the line's whole cost, nothing else), for ``requests: false`` (no middleware), text,
    JSON, and JSON at level warning (the middleware without its line);
  * app: ``GET /v1/admin/clock`` (operator key, no database work: the request's cost is the
    framework's, so the line's share shows) on the whole app (``config/billing.yaml``, metrics
    and rate limits on, a fresh SQLite database in a temporary directory) through
    bench/breakdown.py's in-process ASGI driver, in text and in JSON, with the line on and off in
    turn in the same app (the level of ``billfold.access``);
  * ``--alternatives``: one access line written through the standard library's logging, set up
    the ways that could make it cheaper, against Billfold's writer (the measurement quoted in
    billfold/logs.py).

The lines go to a temporary file installed as ``sys.stderr`` before logging is configured (a real
write per batch, as to a pipe or a terminal); the script checks that every line arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import logging
import logging.handlers
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from queue import Queue
from typing import Any

import msgspec
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from billfold.config.schema import LoggingConfig  # noqa: E402
from billfold.logs import ACCESS_LOGGER, AccessLog, JsonFormatter, litestar_logging_config  # noqa: E402
from breakdown import Lifespan, asgi_call  # noqa: E402

ADMIN_KEY = "access_log_bench"
OPERATOR = {"authorization": f"Bearer {ADMIN_KEY}"}
SETTINGS: dict[str, LoggingConfig | None] = {
    "requests off": None,
    "text": LoggingConfig(format="text"),
    "json": LoggingConfig(format="json"),
    "json, level warning": LoggingConfig(format="json", level="warning"),
}


@contextlib.contextmanager
def stderr_file() -> Iterator[Path]:
    """``sys.stderr`` is a fresh temporary file while the block runs (logging is configured
    inside it, so its handlers write there)."""
    real = sys.stderr
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stderr.log"
        with path.open("w", encoding="utf-8") as file:
            sys.stderr = file
            try:
                yield path
            finally:
                drain()
                reset_logging()
                sys.stderr = real


def reset_logging() -> None:
    """No handler left on a file about to be deleted."""
    for name in (None, "litestar", ACCESS_LOGGER):
        logger = logging.getLogger(name)
        for handler in logger.handlers[:]:
            logger.removeHandler(handler)
            handler.close()


def drain() -> None:
    """Wait until every line logged so far is written (the queue listener's and any buffered
    writer's), so that the time it takes is counted."""
    for logger in (logging.getLogger(), logging.getLogger(ACCESS_LOGGER)):
        for handler in logger.handlers:
            queue = getattr(handler, "queue", None)
            if isinstance(queue, Queue):
                queue.join()
            handler.flush()


def count_lines(path: Path, needle: str) -> int:
    sys.stderr.flush()
    with path.open(encoding="utf-8") as file:
        return sum(needle in line for line in file)


async def measure(label: str, n: int, op: Callable[[], Awaitable[Any]], *, echo: bool = True) -> float:
    for _ in range(max(100, n // 10)):
        await op()
    drain()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        await op()
    drain()
    cpu = (time.process_time() - cpu0) / n * 1e6
    wall = (time.perf_counter() - wall0) / n * 1e6
    if echo:
        print(f"  {label:<44} {cpu:7.2f} µs CPU   {wall:7.2f} µs wall", flush=True)
    return cpu


def report(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each setting's median over the rounds, and what the line adds to ``requests off``."""
    medians = {label: statistics.median(r[label] for r in rounds) for label in rounds[0]}
    for label, cpu in medians.items():
        each = "  ".join(f"{r[label]:7.2f}" for r in rounds)
        print(f"  {label:<24} {cpu:7.2f} µs CPU per request  (rounds: {each})", flush=True)
    off = medians["requests off"]
    print(
        "  the line: "
        + ", ".join(f"{k} {v - off:+.2f} µs" for k, v in medians.items() if k != "requests off")
    )
    return medians


# -- the middleware alone ------------------------------------------------------------------------


async def answer_ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def middleware_section(n: int, rounds: int) -> dict[str, float]:
    print(f"AccessLog around an app that answers 200 at once ({n} requests, {rounds} rounds):")
    results: list[dict[str, float]] = []
    for _ in range(rounds):
        results.append({})
        for label, config in SETTINGS.items():
            with stderr_file() as path:
                app: Any = answer_ok
                if config is not None:
                    litestar_logging_config(config).configure()
                    app = AccessLog()(answer_ok)

                async def op(app: Any = app) -> None:
                    scope = {
                        "type": "http",
                        "method": "GET",
                        "path": "/v1/billing/balance",
                        "path_template": "/v1/billing/balance",
                        "path_params": {},
                        "state": {},
                    }
                    await app(scope, None, _ignore)

                results[-1][label] = await measure(label, n, op, echo=False)
                if config is not None:
                    check_lines(path, "GET /v1/billing/balance 200", n, config)
    return report(results)


def check_lines(path: Path, needle: str, n: int, config: LoggingConfig) -> None:
    """Every request (the warm-up's too) wrote its line, when the level lets it."""
    written = count_lines(path, needle)
    expected = n + max(100, n // 10) if config.level in ("debug", "info") else 0
    assert written == expected, f"{config}: {written} lines written, {expected} expected"


async def _ignore(message: Any) -> None:
    return None


# -- the whole app -------------------------------------------------------------------------------


async def app_section(n: int, rounds: int) -> None:
    from billfold.api.app import Billfold, create_app
    from billfold.cli_support import migration_sources
    from billfold.config import load_config
    from billfold.db.migrate import upgrade

    print(
        f"GET /v1/admin/clock, whole app, metrics and rate limits on; the line on and off in turn "
        f"({rounds} rounds of {n} requests each):"
    )
    access = logging.getLogger(ACCESS_LOGGER)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'billfold.db'}"
        os.environ.update(
            {
                "BILLFOLD_DATABASE_URL": url,
                "BILLFOLD_WORKER_IN_PROCESS": "false",
                "BILLFOLD_RATE_LIMIT": "100000000",
                "BILLFOLD_RATE_LIMIT_STORE": "memory",
                "BILLFOLD_ADMIN_API_KEY": ADMIN_KEY,
            }
        )
        base, lines = load_config(ROOT / "config" / "billing.yaml")
        first = Billfold(base, lines=lines)
        await asyncio.to_thread(upgrade, url, sources=migration_sources(first))
        await first.engine.dispose()
        for label, setting in SETTINGS.items():
            if setting is None or setting.level != "info":
                continue
            with stderr_file() as path:
                billfold = Billfold(msgspec.structs.replace(base, logging=setting), lines=lines)
                app = create_app(billfold)

                async def op(app: Any = app) -> None:
                    status, body = await asgi_call(app, "GET", "/v1/admin/clock", OPERATOR, b"")
                    if status != 200:
                        raise RuntimeError(f"/v1/admin/clock answered {status}: {body[:300]!r}")

                on: list[float] = []
                off: list[float] = []
                async with Lifespan(app):
                    for _ in range(rounds):
                        # The middleware stays; its level check skips the line when off.
                        access.setLevel(logging.NOTSET)
                        on.append(await measure(label, n, op, echo=False))
                        access.setLevel(logging.WARNING)
                        off.append(await measure(label, n, op, echo=False))
                    access.setLevel(logging.NOTSET)
                await billfold.engine.dispose()
                written = count_lines(path, "GET /v1/admin/clock 200")
                assert written == rounds * (n + max(100, n // 10)), f"{label}: {written} lines written"
            added = statistics.median(a - b for a, b in zip(on, off, strict=True))
            print(
                f"  {label:<6} line on {statistics.median(on):7.2f} µs CPU per request, "
                f"off {statistics.median(off):7.2f}: the line {added:+.2f} µs (median of the pairs)"
            )


# -- the standard library's ways, for comparison ---------------------------------------------------


class PlainQueueHandler(logging.handlers.QueueHandler):
    """A queue handler that hands the record over as it is (the message is the ready line)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


@contextlib.contextmanager
def record_settings(*, cheap: bool) -> Iterator[None]:
    """``cheap``: the logging HOWTO's optimizations (no caller, thread or process information)."""
    saved = (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    if cheap:
        logging._srcfile = None
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    try:
        yield
    finally:
        logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing = saved


async def alternatives_section(n: int) -> None:
    import billfold.logs

    writes_lines = hasattr(billfold.logs, "LineWriter")  # not before the writer existed
    print(f"One JSON access line, the ways to write it ({n} lines each, the line's formatting included):")
    logger = logging.getLogger(ACCESS_LOGGER)
    root = logging.getLogger()
    message = "GET /v1/billing/balance 200 1.2 ms"
    fields = {
        "event": "request",
        "tracking_id": "trk_0123456789abcdef0123",
        "organization_id": "6f0b4a3e-8d1c-4d7e-9a55-0c2b3e4f5a6b",
        "method": "GET",
        "route": "/v1/billing/balance",
        "status": 200,
        "duration_ms": 1.234,
    }
    formatter = JsonFormatter()

    async def with_fields() -> None:
        logger.info("%s", message, extra={"fields": fields})

    def format_line(created: float) -> str:
        if writes_lines:
            return formatter.ready_line("INFO", ACCESS_LOGGER, message, fields, created)
        when = datetime.datetime.fromtimestamp(created, datetime.UTC).isoformat(timespec="milliseconds")
        line = {"time": when, "level": "info", "logger": ACCESS_LOGGER, "message": message, **fields}
        return msgspec.json.encode(line).decode()

    async def ready_line() -> None:
        logger.info(format_line(time.time()))

    json_config = LoggingConfig(format="json")
    with stderr_file():
        # As before Billfold's writer: billfold.access propagates to Litestar's queue handler.
        if writes_lines:
            litestar_logging_config(json_config, request_lines=False).configure()
        else:
            litestar_logging_config(json_config).configure()
        await measure("logger.info, Litestar's queue handler", n, with_fields)
        with record_settings(cheap=True):
            await measure("  same, no caller/thread/process info", n, with_fields)
    with stderr_file(), record_settings(cheap=True):
        queue: Queue[logging.LogRecord] = Queue()
        listener = logging.handlers.QueueListener(queue, logging.StreamHandler(sys.stderr))
        listener.start()
        saved_root, root.handlers = root.handlers, [PlainQueueHandler(queue)]
        try:
            await measure("  ready line, QueueHandler without format", n, ready_line)
        finally:
            queue.join()
            listener.stop()
            root.handlers = saved_root
    if not writes_lines:
        return
    with stderr_file():
        litestar_logging_config(json_config).configure()
        writer = logger.handlers[0]
        assert isinstance(writer, billfold.logs.LineWriter), logger.handlers
        await measure("logger.info, Billfold's LineWriter", n, with_fields)
        with record_settings(cheap=True):
            await measure("  same, no caller/thread/process info", n, with_fields)

        async def direct() -> None:
            writer.write_line(formatter.ready_line("INFO", ACCESS_LOGGER, message, fields, time.time()))

        await measure("  ready line, LineWriter.write_line", n, direct)
        parts = (0.001234, "trk_0123456789abcdef0123", "/v1/billing/balance", "/v1/billing/balance")
        more = ("GET", 200, None, "6f0b4a3e-8d1c-4d7e-9a55-0c2b3e4f5a6b")

        async def deferred() -> None:  # as AccessLog: the writing thread formats
            writer.write_line(
                functools.partial(billfold.logs._request_line, formatter, time.time(), *parts, *more)
            )

        await measure("  the line's parts, LineWriter.write_line (Billfold)", n, deferred)


async def main(args: argparse.Namespace) -> None:
    await middleware_section(args.n, args.rounds)
    if args.app_n:
        await app_section(args.app_n, args.app_rounds)
    if args.alternatives:
        await alternatives_section(args.n)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000, help="requests per middleware measurement")
    parser.add_argument("--app-n", type=int, default=1_000, help="requests per app measurement (0: skip)")
    parser.add_argument("--app-rounds", type=int, default=20, help="pairs of app measurements (line on, off)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over the settings (medians)")
    parser.add_argument("--alternatives", action="store_true", help="compare the standard library's ways")
    uvloop.run(main(parser.parse_args()))
