"""Live config: SIGHUP makes `billfold serve` (and `billfold worker`) take an edited billing.yaml;
an invalid edit is refused with its key path and line and the old config stays in force.
`billfold config diff` says what an edit changes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from conftest import BASE_CONFIG, BILLFOLD_CLI, ROOT, run_cli

ADMIN_KEY = "reload_test_key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SMS_PRICE = "    price: 0.79\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_line(log: Path, text: str, after: int, timeout: float = 60) -> str:
    """The first line of the log past offset ``after`` that holds ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace")[after:].splitlines():
            if text in line:
                return line
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not logged:\n{log.read_text(errors='replace')[-3000:]}")


def sms_price(client: httpx.Client, key: str, n: int) -> str:
    response = client.post(
        "/v1/usage",
        json={"channel": "sms", "quantity": 1, "event_id": f"reload-{n}"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 201, response.text
    price: str = response.json()["billing"]["unit_price"]
    return price


def serve_and_reload(tmp_path: Path) -> None:
    config = tmp_path / "billing.yaml"
    assert BASE_CONFIG.count(SMS_PRICE) == 1
    config.write_text(BASE_CONFIG)
    log = tmp_path / "serve.log"
    port = free_port()
    environ = {
        **os.environ,
        "BILLFOLD_CONFIG": str(config),
        "BILLFOLD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/billfold.db",
        "BILLFOLD_ADMIN_API_KEY": ADMIN_KEY,
        "BILLFOLD_RATE_LIMIT": "100000",
    }
    environ.pop("BILLFOLD_PLUGINS", None)
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(BILLFOLD_CLI), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=ROOT,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
            org = client.post("/v1/admin/organizations", json={"name": "Reload"}, headers=ADMIN).json()
            client.post(
                f"/v1/admin/organizations/{org['id']}/adjustments",
                json={"amount_cents": 10_000, "description": "credit"},
                headers=ADMIN,
            )
            assert sms_price(client, org["api_key"], 1) == "0.79"

            # a valid edit: the next event pays the new price, the one before kept the old
            config.write_text(BASE_CONFIG.replace(SMS_PRICE, "    price: 2\n"))
            mark = len(log.read_text())
            server.send_signal(signal.SIGHUP)
            wait_for_line(log, "config reloaded", mark)
            assert sms_price(client, org["api_key"], 2) == "2"

            # an invalid edit: refused with the key path and line, the running config stays
            broken = BASE_CONFIG.replace(SMS_PRICE, "    price: lots\n")
            config.write_text(broken)
            mark = len(log.read_text())
            server.send_signal(signal.SIGHUP)
            refused = wait_for_line(log, "config reload refused", mark)
            line = broken.splitlines().index("    price: lots") + 1
            assert f"{config}:{line} at `channels.sms.price`" in refused
            assert sms_price(client, org["api_key"], 3) == "2"
            assert server.poll() is None
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def test_sighup_applies_a_valid_config_and_refuses_an_invalid_one(tmp_path: Path):
    await asyncio.to_thread(serve_and_reload, tmp_path)


def worker_reload(tmp_path: Path) -> None:
    config = tmp_path / "billing.yaml"
    config.write_text(BASE_CONFIG)
    log = tmp_path / "worker.log"
    url = f"sqlite+aiosqlite:///{tmp_path}/billfold.db"
    assert run_cli("db", "upgrade", database_url=url, env={"BILLFOLD_CONFIG": str(config)}).returncode == 0
    environ = {**os.environ, "BILLFOLD_CONFIG": str(config), "BILLFOLD_DATABASE_URL": url}
    environ.pop("BILLFOLD_PLUGINS", None)
    with log.open("w") as out:
        worker = subprocess.Popen(
            [str(BILLFOLD_CLI), "worker"], cwd=ROOT, env=environ, stdout=out, stderr=out
        )
    try:
        wait_for_line(log, "SIGHUP reloads the config", 0)
        config.write_text(BASE_CONFIG.replace(SMS_PRICE, "    price: lots\n"))
        worker.send_signal(signal.SIGHUP)
        wait_for_line(log, "config reload refused", 0)
        assert worker.poll() is None
        config.write_text(BASE_CONFIG.replace(SMS_PRICE, "    price: 2\n"))
        mark = len(log.read_text())
        worker.send_signal(signal.SIGHUP)
        wait_for_line(log, "restarting the worker with it", mark)
        restarted = wait_for_line(log, "SIGHUP reloads the config", mark)
        assert f"pid {worker.pid}" in restarted  # the same process, started again on the new config
        assert worker.poll() is None
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def test_a_separate_worker_reloads_on_sighup(tmp_path: Path):
    await asyncio.to_thread(worker_reload, tmp_path)


def test_config_diff_says_what_an_edit_changes(tmp_path: Path):
    new = tmp_path / "new.yaml"
    new.write_text(
        BASE_CONFIG.replace(SMS_PRICE, "    price: 0.85\n").replace(
            "downgrade_after_months: 3", "downgrade_after_months: 4"
        )
    )
    shown = run_cli("config", "diff", "config/billing.yaml", str(new), database_url="sqlite://")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "prices:",
        '  ~ channels.sms.price: "0.79" -> "0.85"',
        "plugins:",
        "  ~ plugins.tiers.downgrade_after_months: 3 -> 4",
    ]
    same = run_cli("config", "diff", "config/billing.yaml", "config/billing.yaml", database_url="sqlite://")
    assert same.stdout.strip() == "no changes"
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE_CONFIG.replace(SMS_PRICE, "    price: lots\n"))
    refused = run_cli("config", "diff", "config/billing.yaml", str(bad), database_url="sqlite://")
    assert refused.returncode == 1 and "channels.sms.price" in refused.stderr
