"""The README's curl tour is run as written against a live `billfold serve` (fresh SQLite database,
the shipped billing.yaml): every command must succeed (curl fails the script on an HTTP error) and
the figures the tour states must be the ones the server answers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import BILLFOLD_CLI, ROOT

README = (ROOT / "README.md").read_text()


def tour() -> str:
    section = README[README.index("## A curl tour") :]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the tour has no sh block"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def json_lines(output: str) -> list[dict[str, Any]]:
    found = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return found


def run_tour(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    port = free_port()
    script = tour()
    assert "uv run billfold serve &\n" in script
    script = script.replace("uv run billfold serve &\n", "").replace("localhost:8000", f"localhost:{port}")
    script = script.replace("uv run billfold ", f"{BILLFOLD_CLI} ")  # the same console script
    # any HTTP error fails the tour; each answer ends its line
    script = 'set -euo pipefail\ncurl() { command curl --fail-with-body --show-error "$@"; echo; }\n' + script
    environ = {
        **os.environ,
        "BILLFOLD_CONFIG": str(ROOT / "config" / "billing.yaml"),
        "BILLFOLD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/tour.db",
        "BILLFOLD_ADMIN_API_KEY": "admin_secret",
        "BILLFOLD_WORKER_IN_PROCESS": "true",
    }
    environ.pop("BILLFOLD_PLUGINS", None)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(BILLFOLD_CLI), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,  # where the tour's files (invoice.pdf) land
            env=environ,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        return done, log.read_text(errors="replace")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="the tour uses curl and jq")
async def test_the_readme_tour_runs_as_written(tmp_path: Path):
    done, log = await asyncio.to_thread(run_tour, tmp_path)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{log[-2000:]}"
    answers = json_lines(done.stdout)
    created = next(a for a in answers if "api_key" in a)
    assert created["api_key"].startswith("sk_test_")
    call = next(a for a in answers if a.get("event_id") == "call-987654320")
    assert (call["billing"]["billed_quantity"], call["billing"]["amount_cents"]) == (3, 24)
    assert call["billing"]["balance"]["free"] == 19976
    sms = next(a for a in answers if a.get("event_id") == "sms-batch-1")
    assert sms["billing"]["tier"] == {"channel": "sms", "current": "standard", "volume_used": 100}
    charge = next(a for a in answers if a.get("transaction", {}).get("kind") == "debit")
    assert (charge["transaction"]["id"], charge["balance"]["free"]) == (4, 19881)
    balance = next(a for a in answers if set(a) == {"free", "reserved", "total", "currency"})
    assert balance == {"free": 197.61, "reserved": 0.0, "total": 197.61, "currency": "USD"}
    pages = [a for a in answers if "next_cursor" in a and a.get("data") is not None]
    assert pages, "the cursor step printed no page"
    topped = next(a for a in answers if "payment_intent_id" in a)
    assert topped["status"] == "succeeded"
    hook = next(a for a in answers if "endpoint_id" in a)  # the test delivery
    assert hook["event"] == "webhook.test"
    invoice = next(a for a in answers if "number" in a and "lines" in a)
    assert invoice["number"].startswith("BF-") and invoice["status"] == "finalized"
    assert (tmp_path / "invoice.pdf").read_bytes().startswith(b"%PDF")
