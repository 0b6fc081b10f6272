"""GET /metrics: Prometheus's text format behind the operator key (or on its own port), counting
requests, charges and usage events by outcome, ledger entries and auto-reload outcomes, reading
holds, the outbox and the month close at scrape time, plugins' metrics through `billfold_metrics`,
and, under `billfold serve --workers 2`, the sum of both workers' counts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import Counter
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from billfold.db import table_of
from billfold.hookspecs import hookimpl
from billfold.orgs.models import Organization
from billfold.plugins import create_plugin_manager
from conftest import ADMIN, BILLFOLD_CLI, ROOT, assert_error, open_client

organizations_table = table_of(Organization)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def save_card(client: httpx.AsyncClient, tenant: Any) -> None:
    response = await client.post(
        "/v1/billing/default-payment-method",
        json={"payment_method_id": "pm_card_visa"},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text


async def test_counters_after_a_charge_a_402_and_usage(client, new_tenant):
    tenant = await new_tenant(balance=1000)
    charged = await client.post("/v1/billing/charges", json={"amount_cents": 100}, headers=tenant.headers)
    assert charged.status_code == 201, charged.text
    refused = await client.post("/v1/billing/charges", json={"amount_cents": 10**6}, headers=tenant.headers)
    assert_error(refused, 402, "insufficient_funds")
    keyed = {**tenant.headers, "Idempotency-Key": "charge-1"}
    for _ in range(2):  # the second answers the first's response
        assert (await client.post("/v1/billing/charges", json={"amount_cents": 5}, headers=keyed)).is_success
    invalid = await client.post("/v1/billing/charges", json={"amount_cents": 0}, headers=tenant.headers)
    assert_error(invalid, 400, "validation_error")
    used = await client.post(
        "/v1/usage", json={"channel": "sms", "quantity": 10, "event_id": "e-1"}, headers=tenant.headers
    )
    assert used.status_code == 201, used.text
    batch = await client.post(
        "/v1/usage/batch",
        json={
            "events": [
                {"channel": "sms", "quantity": 10, "event_id": "e-1"},  # a repeat
                {"channel": "sms", "quantity": 1, "event_id": "e-2"},
                {"channel": "call", "quantity": 10**7, "event_id": "e-3"},  # more than the balance
            ]
        },
        headers=tenant.headers,
    )
    assert [r["status"] for r in batch.json()["results"]] == ["replayed", "accepted", "refused"]
    held = await client.post("/v1/billing/holds", json={"amount_cents": 50}, headers=tenant.headers)
    assert held.status_code == 201, held.text
    await save_card(client, tenant)
    topped = await client.post("/v1/billing/top-up", json={"amount_cents": 5000}, headers=tenant.headers)
    assert topped.status_code == 201, topped.text  # payment.succeeded waits in the outbox

    samples = await scrape(client)
    charges = "billfold_charges_total"
    assert value(samples, charges, outcome="accepted", code="") == 2
    assert value(samples, charges, outcome="replayed", code="") == 1
    assert value(samples, charges, outcome="refused", code="insufficient_funds") == 1
    assert value(samples, charges, outcome="refused", code="validation_error") == 1
    usage = "billfold_usage_events_total"
    assert value(samples, usage, outcome="accepted", code="") == 2
    assert value(samples, usage, outcome="replayed", code="") == 1
    assert value(samples, usage, outcome="refused", code="insufficient_funds") == 1
    latency = "billfold_http_request_duration_seconds"
    route = {"method": "POST", "route": "/v1/billing/charges"}
    assert value(samples, f"{latency}_count", **route, status="201") == 3
    assert value(samples, f"{latency}_bucket", **route, status="402", le="+Inf") == 1
    assert value(samples, f"{latency}_bucket", **route, status="201", le="10.0") == 3
    assert value(samples, f"{latency}_sum", **route, status="201") > 0
    assert value(samples, "billfold_holds_open") == 1
    assert value(samples, "billfold_outbox_pending") >= 1
    assert value(samples, "billfold_outbox_oldest_age_seconds") >= 0
    entries = "billfold_ledger_entries_total"
    # the opening adjustment, the charges, the usage (one each), the hold, the top-up
    assert value(samples, entries, kind="adjustment") == 1
    assert value(samples, entries, kind="debit") == 4
    assert value(samples, entries, kind="hold") == 1
    assert value(samples, entries, kind="credit") == 1
    closes = [k for k in samples if k[0] == "billfold_month_close_organizations"]
    assert {dict(labels)["state"] for _, labels in closes} == {"closed", "pending"}
    assert value(samples, "billfold_metrics_source_up", source="holds") == 1
    assert all(v == 1 for (name, _), v in samples.items() if name == "billfold_metrics_source_up")


async def test_the_operator_key_is_required(client, tenant):
    assert_error(await client.get("/metrics"), 401, "missing_api_key")
    assert_error(await client.get("/metrics", headers=tenant.headers), 401, "invalid_admin_key")
    assert (await client.get("/metrics", headers=ADMIN)).status_code == 200


async def test_metrics_are_not_in_the_openapi_document(client):
    document = (await client.get("/schema/openapi.json")).json()
    assert "/metrics" not in document["paths"]


@pytest.mark.parametrize(
    ("config", "status"),
    [({"require_operator_key": False}, 200), ({"enabled": False}, 404)],
)
async def test_config_opens_or_switches_off_the_route(make_state, config, status):
    state = make_state({"metrics": config})
    try:
        async with open_client(state) as client:
            assert (await client.get("/metrics")).status_code == status
    finally:
        await state.engine.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_port_of_its_own(make_state):
    port = free_port()
    state = make_state({"metrics": {"port": port, "host": "127.0.0.1"}})
    try:
        async with (
            open_client(state) as client,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as scraper,
        ):
            assert (await client.get("/metrics", headers=ADMIN)).status_code == 404  # not on the API's
            created = await client.post("/v1/admin/organizations", json={"name": "Port"}, headers=ADMIN)
            assert created.status_code == 201
            answer = await scraper.get("/metrics", headers=ADMIN)
            assert answer.status_code == 200, answer.text
            samples = parse(answer.text)
            assert (
                value(
                    samples,
                    "billfold_http_request_duration_seconds_count",
                    method="POST",
                    route="/v1/admin/organizations",
                    status="201",
                )
                == 1
            )
            assert value(samples, "billfold_metrics_source_up", source="outbox") == 1
            refused = await scraper.get("/metrics", headers={"Authorization": "Bearer wrong"})
            assert (refused.status_code, refused.json()["code"]) == (401, "invalid_admin_key")
            assert (await scraper.get("/metrics")).json()["code"] == "missing_api_key"
            assert (await scraper.get("/other", headers=ADMIN)).status_code == 404
    finally:
        await state.engine.dispose()
    with socket.socket() as probe:  # the port was let go with the app (no listener left)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


async def test_auto_reload_outcomes_are_counted(client, new_tenant, state):
    tenant = await new_tenant(balance=3000)
    await save_card(client, tenant)
    enabled = await client.put(
        "/v1/billing/auto-reload",
        json={"enabled": True, "trigger_threshold": 10, "reload_amount": 50},
        headers=tenant.headers,
    )
    assert enabled.status_code == 200, enabled.text
    charged = await client.post("/v1/billing/charges", json={"amount_cents": 2500}, headers=tenant.headers)
    assert charged.status_code == 201
    await state.worker.load_handlers()
    await state.worker.drain()
    samples = await scrape(client)
    assert value(samples, "billfold_auto_reload_events_total", outcome="requested") == 1
    assert value(samples, "billfold_auto_reload_events_total", outcome="succeeded") == 1
    assert value(samples, "billfold_ledger_entries_total", kind="credit") == 1


# -- plugins ----------------------------------------------------------------------------------------------


class MetricsPlugin:
    """A plugin's metrics: a counter it increments, a gauge it reads at scrape time, and a broken
    source (left out of the scrape, which still answers)."""

    def __init__(self) -> None:
        self.sent = Counter("plugin_sends", "Sends by outcome", ("outcome",), registry=None)

    @hookimpl
    def billfold_metrics(self, state):
        async def organizations():
            async with state.db.reading() as conn:
                count = (
                    await conn.execute(select(func.count()).select_from(organizations_table))
                ).scalar_one()
            return [GaugeMetricFamily("plugin_organizations", "Organizations", value=count)]

        def broken():
            raise RuntimeError("the plugin's store is down")

        return [self.sent, organizations, broken]


async def test_plugins_add_collectors_and_scrape_time_sources(make_state):
    plugin = MetricsPlugin()
    pm = create_plugin_manager()
    pm.register(plugin, name="metrics-test")
    state = make_state(pm=pm)
    try:
        async with open_client(state) as client:
            for name in ("a", "b"):
                assert (
                    await client.post("/v1/admin/organizations", json={"name": name}, headers=ADMIN)
                ).status_code == 201
            plugin.sent.labels("delivered").inc(3)
            logged: list[logging.LogRecord] = []
            handler = logging.Handler()
            handler.emit = logged.append  # type: ignore[method-assign]
            logging.getLogger("billfold.metrics").addHandler(handler)
            try:
                samples = await scrape(client)
            finally:
                logging.getLogger("billfold.metrics").removeHandler(handler)
    finally:
        await state.engine.dispose()
    assert value(samples, "plugin_sends_total", outcome="delivered") == 3
    assert value(samples, "plugin_organizations") == 2
    up = "billfold_metrics_source_up"
    assert value(samples, up, source="metrics-test") == 0  # the broken source, logged
    assert value(samples, up, source="holds") == 1
    assert [r.exc_info[1].args for r in logged if r.exc_info] == [("the plugin's store is down",)]


def test_the_hook_is_declared_and_exported():
    import billfold
    from billfold import hookspecs

    assert "billfold_metrics" in dir(hookspecs)
    assert "MetricsSource" in billfold.__all__


# -- several workers ---------------------------------------------------------------------------------------

N_PER_ROUND = 30


@contextlib.contextmanager
def serving_two_workers(tmp_path: Path, database_url: str, admin_key: str, shared: Path) -> Iterator[str]:
    """`billfold serve --workers 2` with ``shared`` as its multiprocess metrics directory, until the
    block ends (then SIGTERM); yields its base URL once /health answers."""
    port = free_port()
    environ = {
        **os.environ,
        "BILLFOLD_CONFIG": "config/billing.yaml",
        "BILLFOLD_DATABASE_URL": database_url,
        "BILLFOLD_ADMIN_API_KEY": admin_key,
        "BILLFOLD_RATE_LIMIT": "100000",
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
    }
    environ.pop("BILLFOLD_PLUGINS", None)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(BILLFOLD_CLI), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            cwd=ROOT,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def serve_two_workers_and_charge(tmp_path: Path, database_url: str) -> tuple[int, dict[int, float], float]:
    """`billfold serve --workers 2`; charges on new connections, round after round until both
    workers answered some; then the scraped counter. Returns (charges sent, charges per worker
    from the workers' files, the scraped count)."""
    shared = tmp_path / "multiproc"
    shared.mkdir()
    (shared / "counter_99999.db").write_bytes(b"stale")  # an earlier run's: removed at start
    admin_key = "metrics_test_key"
    admin = {"Authorization": f"Bearer {admin_key}"}
    with serving_two_workers(tmp_path, database_url, admin_key, shared) as base:
        assert not (shared / "counter_99999.db").exists()
        created = httpx.post(
            f"{base}/v1/admin/organizations", json={"name": "Workers"}, headers=admin, timeout=30
        )
        assert created.status_code == 201, created.text
        org = created.json()
        funded = httpx.post(
            f"{base}/v1/admin/organizations/{org['id']}/adjustments",
            json={"amount_cents": 10**6, "description": "opening"},
            headers=admin,
            timeout=30,
        )
        assert funded.status_code == 201, funded.text
        tenant = {"Authorization": f"Bearer {org['api_key']}", "Connection": "close"}

        async def charge_round() -> None:
            async def one() -> None:
                async with httpx.AsyncClient(base_url=base, timeout=30) as client:  # its own connection
                    answer = await client.post(
                        "/v1/billing/charges", json={"amount_cents": 1}, headers=tenant
                    )
                    assert answer.status_code == 201, answer.text

            await asyncio.gather(*[one() for _ in range(N_PER_ROUND)])

        sent = 0
        per_worker: dict[int, float] = {}
        for _ in range(10):
            asyncio.run(charge_round())
            sent += N_PER_ROUND
            flushed = time.monotonic() + 10  # each worker adds its counts every second
            while sum((per_worker := charges_per_worker(shared)).values()) < sent:
                assert time.monotonic() < flushed, (sent, per_worker)
                time.sleep(0.2)
            if len([n for n in per_worker.values() if n > 0]) >= 2:
                break
        scraped = [parse(httpx.get(f"{base}/metrics", headers=admin, timeout=30).text) for _ in range(6)]
        counts = {value(s, "billfold_charges_total", outcome="accepted", code="") for s in scraped}
        assert len(counts) == 1, counts  # whichever worker answered
        return sent, per_worker, counts.pop()


def charges_per_worker(shared: Path) -> dict[int, float]:
    """Accepted charges in each worker's own file (``counter_<pid>.db``)."""
    found: dict[int, float] = {}
    for path in shared.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, count, *_ in MmapedDict.read_all_values_from_file(str(path)):
            if '"billfold_charges_total"' in key and '"accepted"' in key:
                found[pid] = found.get(pid, 0) + count
    return found


async def test_two_workers_sum_their_counts(database_url, tmp_path):
    sent, per_worker, scraped = await asyncio.to_thread(serve_two_workers_and_charge, tmp_path, database_url)
    assert len([n for n in per_worker.values() if n > 0]) == 2, per_worker  # both workers charged
    assert sum(per_worker.values()) == sent
    assert scraped == sent


def test_serve_leaves_no_directory_behind(tmp_path):
    """Without an operator's directory, `serve` makes a fresh one and removes it at exit."""
    from billfold.metrics.multiprocess import MULTIPROC_ENV, multiprocess_directory

    saved = os.environ.pop(MULTIPROC_ENV, None)
    try:
        with multiprocess_directory() as path:
            assert path is not None and path.is_dir() and not any(path.iterdir())
            assert os.environ[MULTIPROC_ENV] == str(path)
        assert not path.exists() and MULTIPROC_ENV not in os.environ
        with multiprocess_directory(enabled=False) as nothing:
            assert nothing is None and MULTIPROC_ENV not in os.environ
    finally:
        if saved is not None:
            os.environ[MULTIPROC_ENV] = saved
