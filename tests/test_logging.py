"""Structured logs: with ``logging.format: json`` every request writes one JSON line (tracking id,
organization, route, status, duration) and every background job one; no secret is ever written."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from billfold.events.outbox import emit
from billfold.hookspecs import WorkerTask
from billfold.logs import JsonFormatter, LineWriter, redact
from conftest import ADMIN, ADMIN_KEY, open_client

JSON_LOGS = {"logging": {"format": "json"}}


class Output:
    """What the process wrote to stderr (Billfold's log lines are written by threads: Litestar's
    queue listener, and the request lines' writer, in batches: wait for them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The handlers are built when the app starts, on the sys.stderr of that moment: a buffer
        # here. (pytest's capfd cannot be polled: each read truncates its file, and a line the
        # listener thread writes between the read and the truncation is lost.)
        self.buffer = io.StringIO()
        monkeypatch.setattr(sys, "stderr", self.buffer)
        self.text = ""

    def read(self) -> str:
        self.text = self.buffer.getvalue()
        return self.text

    def json_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.read().splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines

    async def wait_for_text(self, wanted: str) -> None:
        deadline = time.monotonic() + 30  # a loaded machine (two test processes) writes late
        while wanted not in self.read() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def wait_for(
        self, wanted: Callable[[dict[str, Any]], bool], count: int = 1
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 30  # a loaded machine (two test processes) writes late
        while True:
            found = [line for line in self.json_lines() if wanted(line)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.02)


async def test_a_request_writes_one_json_line_with_its_fields_and_no_secret(make_state, monkeypatch) -> None:
    state = make_state(JSON_LOGS)
    out = Output(monkeypatch)
    try:
        async with open_client(state) as client:
            created = await client.post(
                "/v1/admin/organizations", json={"name": "Logged", "currency": "usd"}, headers=ADMIN
            )
            assert created.status_code == 201, created.text
            org_id, api_key = created.json()["id"], created.json()["api_key"]
            tenant = {"Authorization": f"Bearer {api_key}"}
            await client.post(
                f"/v1/admin/organizations/{org_id}/adjustments",
                json={"amount_cents": 500, "description": "opening balance"},
                headers=ADMIN,
            )
            charged = await client.post(
                "/v1/billing/charges?note=x", json={"amount_cents": 120}, headers=tenant
            )
            assert charged.status_code == 201, charged.text
            refused = await client.post("/v1/billing/charges", json={"amount_cents": 10_000}, headers=tenant)
            assert refused.status_code == 402, refused.text

            charges = await out.wait_for(lambda line: line.get("route") == "/v1/billing/charges", count=2)
    finally:
        await state.engine.dispose()

    ok, failed = sorted(charges, key=lambda line: line["status"])
    assert len(charges) == 2, charges  # one line per request, none for the 402 besides its own
    assert ok["event"] == "request" and ok["level"] == "info" and ok["logger"] == "billfold.access"
    assert ok["method"] == "POST" and ok["status"] == 201
    assert ok["organization_id"] == org_id
    assert ok["tracking_id"].startswith("trk_") and ok["tracking_id"] != failed["tracking_id"]
    assert isinstance(ok["duration_ms"], float) and 0 < ok["duration_ms"] < 60_000
    assert "code" not in ok
    # The 402 line names the error and the tracking id the client was given.
    assert failed["status"] == 402 and failed["code"] == "insufficient_funds"
    assert failed["tracking_id"] == refused.headers["X-Tracking-Id"] == refused.json()["trackingId"]
    assert failed["organization_id"] == org_id
    # Operator routes: the organization of the path; the route is the template, never the path.
    adjusted = [line for line in out.json_lines() if line.get("route", "").endswith("/adjustments")]
    assert [line["route"] for line in adjusted] == ["/v1/admin/organizations/{org_id}/adjustments"]
    assert adjusted[0]["organization_id"] == org_id and adjusted[0]["status"] == 201
    # Every line is JSON; no key, token or query string reached the log.
    # (httpx, the test's own client, logs the URLs it calls: not the server's lines)
    written = "\n".join(line for line in out.read().splitlines() if '"logger":"httpx"' not in line)
    assert written.strip() and all(line.startswith("{") for line in written.splitlines() if line.strip())
    for secret in (api_key, ADMIN_KEY, "Bearer", "note=x"):
        assert secret not in written, secret


async def test_a_request_line_in_text_format_by_default(make_state, monkeypatch) -> None:
    state = make_state()
    out = Output(monkeypatch)
    try:
        async with open_client(state) as client:
            response = await client.get(
                "/v1/billing/balance", headers={"Authorization": "Bearer sk_test_nope"}
            )
            assert response.status_code == 401
            await out.wait_for_text("billfold.access")
    finally:
        await state.engine.dispose()
    lines = [line for line in out.text.splitlines() if "billfold.access" in line]
    assert len(lines) == 1, out.text
    assert lines[0].startswith("INFO - ")
    assert "GET /v1/billing/balance 401 " in lines[0] and " ms" in lines[0]
    assert "sk_test_nope" not in out.text


async def test_requests_lines_can_be_switched_off(make_state, monkeypatch) -> None:
    state = make_state({"logging": {"format": "json", "requests": False}})
    out = Output(monkeypatch)
    try:
        async with open_client(state) as client:
            refused = await client.get("/v1/billing/balance")
            assert refused.status_code == 401
            await asyncio.sleep(0.2)
    finally:
        await state.engine.dispose()
    lines = out.json_lines()
    assert not [line for line in lines if line.get("event") == "request"]
    # The error is still logged, once, with the tracking id the client was given.
    errors = [line for line in lines if refused.headers["X-Tracking-Id"] in line["message"]]
    assert len(errors) == 1 and errors[0]["logger"] == "billfold.api", lines


async def test_a_background_job_writes_one_json_line(make_state, monkeypatch) -> None:
    state = make_state(JSON_LOGS)
    out = Output(monkeypatch)
    org_id = uuid.uuid4()
    ran: list[str] = []

    async def handler(event: Any) -> None:
        ran.append(event.type)

    async def busy_task() -> int:
        return 3  # did something: an INFO line

    async def idle_task() -> int:
        return 0  # nothing to do: a DEBUG line (not written at level info)

    try:
        async with open_client(state):
            async with state.db.transaction() as conn:
                event = await emit(conn, "test.logged", {"secret": "no"}, org_id=org_id)
            state.worker.handlers = {"test.logged": [handler]}
            await state.worker.drain()
            state.worker.tasks = [
                WorkerTask(name="busy", interval_seconds=60, run=busy_task),
                WorkerTask(name="idle", interval_seconds=60, run=idle_task),
            ]
            await state.worker.run_tasks_once()
            jobs = await out.wait_for(lambda line: line.get("event") == "job", count=2)
    finally:
        await state.engine.dispose()

    assert ran == ["test.logged"]
    by_job = {line["job"]: line for line in jobs}
    assert sorted(by_job) == ["busy", "test.logged"], jobs
    delivered = by_job["test.logged"]
    assert delivered["kind"] == "event" and delivered["outcome"] == "done"
    assert delivered["event_id"] == event.id and delivered["attempts"] == 1
    assert delivered["organization_id"] == str(org_id)
    assert delivered["logger"] == "billfold.jobs" and delivered["duration_ms"] >= 0
    assert by_job["busy"]["kind"] == "task" and by_job["busy"]["outcome"] == "done"


def test_secrets_are_masked_in_any_message() -> None:
    assert redact("key sk_test_abc123 sent") == "key sk_test_*** sent"
    assert redact("Authorization: Bearer abc.def-ghi") == "Authorization: Bearer ***"
    assert redact("signed with whsec_c2VjcmV0+/=") == "signed with whsec_***"
    record = logging.LogRecord(
        "billfold.x", logging.ERROR, __file__, 1, "stripe said %s", ("rk_live_zz9",), None
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "stripe said rk_live_***" and line["level"] == "error"


REQUEST_KEYS = [
    "time",
    "level",
    "logger",
    "message",
    "event",
    "tracking_id",
    "organization_id",
    "method",
    "route",
    "status",
    "duration_ms",
    "code",
]


async def test_request_lines_under_load_all_arrive_whole_and_once(make_state, monkeypatch) -> None:
    # Lines are written only in batches of 16 (never on a timer) and at shutdown.
    monkeypatch.setattr(LineWriter, "batch", 16)
    monkeypatch.setattr(LineWriter, "interval", 3600.0)
    state = make_state(JSON_LOGS)
    out = Output(monkeypatch)
    requests = 500
    try:
        async with open_client(state) as client:
            answers = await asyncio.gather(*(client.get("/v1/billing/balance") for _ in range(requests)))
            assert {answer.status_code for answer in answers} == {401}
            # Full batches are written while the app runs; at most one partial batch waits.
            before_shutdown = await out.wait_for(
                lambda line: line.get("event") == "request", count=requests - 15
            )
            assert requests - 15 <= len(before_shutdown) <= requests
    finally:
        await state.engine.dispose()

    lines = [line for line in out.json_lines() if line.get("event") == "request"]
    sent = sorted(answer.headers["X-Tracking-Id"] for answer in answers)
    assert sorted(line["tracking_id"] for line in lines) == sent  # every one, once
    assert len(set(sent)) == requests
    for line in lines:
        assert list(line) == REQUEST_KEYS, line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"]), line
        assert line["level"] == "info" and line["logger"] == "billfold.access"
        assert line["status"] == 401 and line["code"] == "missing_api_key"
        assert line["message"] == f"GET /v1/billing/balance 401 missing_api_key {line['duration_ms']:.1f} ms"
    # Nothing but whole lines: each one is a JSON object.
    assert all(raw.startswith("{") and raw.endswith("}") for raw in out.text.splitlines() if raw)


async def test_request_lines_waiting_are_written_at_shutdown(make_state, monkeypatch) -> None:
    monkeypatch.setattr(LineWriter, "interval", 3600.0)  # no timed write: the shutdown writes
    state = make_state()
    out = Output(monkeypatch)
    try:
        async with open_client(state) as client:
            refused = await client.get("/v1/billing/balance", headers={"Authorization": "Bearer nope"})
            assert refused.status_code == 401
            await asyncio.sleep(0.3)
            assert "billfold.access" not in out.read()  # waiting in the writer
    finally:
        await state.engine.dispose()
    lines = [line for line in out.read().splitlines() if "billfold.access" in line]
    assert len(lines) == 1, out.text
    assert re.fullmatch(
        r"INFO - \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - billfold\.access - "
        r"GET /v1/billing/balance 401 invalid_api_key \d+\.\d ms",
        lines[0],
    ), lines[0]


async def test_request_lines_respect_the_level(make_state, monkeypatch) -> None:
    state = make_state({"logging": {"format": "json", "level": "warning"}})
    out = Output(monkeypatch)
    try:
        async with open_client(state) as client:
            for _ in range(3):
                refused = await client.get("/v1/billing/balance")
                assert refused.status_code == 401
            logging.getLogger("billfold.api").warning("probe after the requests")
            await out.wait_for_text("probe after the requests")
    finally:
        await state.engine.dispose()
    lines = out.json_lines()
    assert [line["message"] for line in lines] == ["probe after the requests"], lines


async def test_an_organization_named_in_the_path_is_masked_like_a_secret(make_state, monkeypatch) -> None:
    state = make_state(JSON_LOGS)
    out = Output(monkeypatch)
    try:
        async with open_client(state) as client:
            refused = await client.get(
                "/v1/billing/sk_test_pathsecret42/credits", headers={"Authorization": "Bearer nope"}
            )
            assert refused.status_code == 401
            [line] = await out.wait_for(lambda line: line.get("event") == "request")
    finally:
        await state.engine.dispose()
    assert line["route"] == "/v1/billing/{organization_id}/credits"
    assert line["organization_id"] == "sk_test_***"
    assert "pathsecret42" not in out.read()


async def test_a_filter_on_the_access_logger_gets_each_request_record(make_state, monkeypatch) -> None:
    """With a filter, lines go through LogRecords (the filter sees them), in the same shape."""
    state = make_state(JSON_LOGS)
    out = Output(monkeypatch)
    seen: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record)
        return True

    access = logging.getLogger("billfold.access")
    try:
        async with open_client(state) as client:
            access.addFilter(keep)
            try:
                refused = await client.get("/v1/billing/balance")
            finally:
                access.removeFilter(keep)
            assert refused.status_code == 401
            [line] = await out.wait_for(lambda line: line.get("event") == "request")
    finally:
        await state.engine.dispose()
    assert [record.__dict__["fields"]["tracking_id"] for record in seen] == [refused.headers["X-Tracking-Id"]]
    assert list(line) == REQUEST_KEYS and line["tracking_id"] == refused.headers["X-Tracking-Id"]
    assert line["message"] == f"GET /v1/billing/balance 401 missing_api_key {line['duration_ms']:.1f} ms"


def test_a_closed_stream_takes_no_more_lines_and_nothing_is_reported(monkeypatch):
    """The stream a writer was given may close before it (a test's captured stderr): the lines that
    wait then have nowhere to go and are not an error; a stream that fails otherwise is reported."""
    from billfold import logs

    reported: list[int] = []
    monkeypatch.setattr(logs, "_report_error", lambda: reported.append(1))

    stream = io.StringIO()
    writer = LineWriter(stream)
    try:
        writer.write_line("before")
        writer.flush()
        assert stream.getvalue() == "before\n"
        stream.close()
        writer.write_line("after")
        writer.flush()
        assert reported == []

        class Failing(io.StringIO):
            def write(self, text: str) -> int:
                raise OSError("disk full")

        writer.stream = Failing()
        writer.write_line("lost")
        writer.flush()
        assert reported == [1]
    finally:
        writer.close()
