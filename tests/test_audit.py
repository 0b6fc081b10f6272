"""The audit trail: every operator action (HTTP and CLI) leaves exactly one row in its own
transaction, a refused or rolled-back action none; GET /v1/admin/audit filters and pages; named
operator keys are created, used (their label is the actor) and revoked."""

from __future__ import annotations

import asyncio
import datetime
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy import text

import billfold
import billfold.audit.actions as actions_module
from billfold.api.app import Billfold
from billfold.api.auth import OperatorAuth
from billfold.audit.service import AuditActor
from billfold.errors import Conflict
from conftest import ADMIN, open_client, run_cli

CLI_ACTOR = AuditActor(who="cli:test")


async def rows(
    client: httpx.AsyncClient, headers: dict[str, str] = ADMIN, **params: Any
) -> list[dict[str, Any]]:
    """Every audit row matching ``params``, newest first, read through the cursor."""
    found: list[dict[str, Any]] = []
    cursor = ""
    while True:
        answer = await client.get(
            "/v1/admin/audit", params={**params, "cursor": cursor, "limit": 200}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        found += page["data"]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return found
        cursor = page["next_cursor"]


async def count(state: Billfold) -> int:
    return await state.audit.count()


async def test_each_operator_action_leaves_exactly_one_row(client, state):
    async def one(action: str, response: httpx.Response, status: int) -> dict[str, Any]:
        assert response.status_code == status, response.text
        latest = await rows(client)
        assert len(latest) == before + 1, [r["action"] for r in latest]
        row = latest[0]
        assert row["action"] == action
        assert row["actor"] == "bootstrap"
        assert row["tracking_id"].startswith("trk_")
        return row

    before = await count(state)
    created = await client.post(
        "/v1/admin/organizations", json={"name": "Acme", "reason": "new customer"}, headers=ADMIN
    )
    row = await one("organization.created", created, 201)
    org_id = created.json()["id"]
    assert row["organization_id"] == org_id
    assert row["reason"] == "new customer"
    assert row["after"]["name"] == "Acme" and row["after"]["key_id"] == created.json()["key_id"]
    assert row["before"] is None

    before = await count(state)
    adjusted = await client.post(
        f"/v1/admin/organizations/{org_id}/adjustments",
        json={"amount_cents": 5000, "description": "goodwill", "reason": "outage credit"},
        headers=ADMIN,
    )
    row = await one("ledger.adjusted", adjusted, 201)
    assert row["before"]["free_cents"] == 0
    assert row["after"]["free_cents"] == 5000 and row["after"]["amount_cents"] == 5000
    assert row["after"]["entry_id"] == int(adjusted.json()["transaction"]["id"]) or row["target"].startswith(
        "entry:"
    )
    assert row["reason"] == "outage credit"

    before = await count(state)
    refunded = await client.post(
        f"/v1/admin/organizations/{org_id}/refunds",
        json={"amount_cents": 700, "description": "returned", "reference": "wire-1"},
        headers=ADMIN,
    )
    row = await one("ledger.refunded", refunded, 201)
    assert (row["before"]["free_cents"], row["after"]["free_cents"]) == (5000, 4300)
    assert row["after"]["reference"] == "wire-1"
    assert row["reason"] is None  # optional for API clients

    before = await count(state)
    issued = await client.post(
        f"/v1/admin/organizations/{org_id}/keys", json={"name": "ci", "reason": "CI"}, headers=ADMIN
    )
    row = await one("api_key.created", issued, 201)
    key_id = issued.json()["id"]
    assert row["target"] == key_id and row["after"]["prefix"] == issued.json()["prefix"]
    assert issued.json()["api_key"] not in json.dumps(row)  # the secret is never recorded

    before = await count(state)
    revoked = await client.post(f"/v1/admin/keys/{key_id}/revoke", json={"reason": "leaked"}, headers=ADMIN)
    row = await one("api_key.revoked", revoked, 200)
    assert (row["before"]["revoked"], row["after"]["revoked"], row["reason"]) == (False, True, "leaked")
    assert row["organization_id"] == org_id

    # a revocation without a body still works (existing clients)
    other = await client.post(f"/v1/admin/organizations/{org_id}/keys", headers=ADMIN)
    before = await count(state)
    await one(
        "api_key.revoked",
        await client.post(f"/v1/admin/keys/{other.json()['id']}/revoke", headers=ADMIN),
        200,
    )

    before = await count(state)
    status = await client.put(
        f"/v1/admin/organizations/{org_id}/status",
        json={"status": "blocked", "reason": "fraud"},
        headers=ADMIN,
    )
    row = await one("organization.status_set", status, 200)
    assert (row["before"]["status"], row["after"]["status"]) == ("verified", "blocked")
    assert row["after"]["suspended_at"] is not None

    before = await count(state)
    overage = await client.put(
        f"/v1/admin/organizations/{org_id}/overage", json={"overage_limit_cents": 250}, headers=ADMIN
    )
    row = await one("organization.overage_set", overage, 200)
    assert (row["before"], row["after"]) == ({"overage_limit_cents": 0}, {"overage_limit_cents": 250})

    before = await count(state)
    plan = await client.put(
        f"/v1/admin/organizations/{org_id}/plan",
        json={"message_step": "starter", "sms_cap": 900, "reason": "upsell"},
        headers=ADMIN,
    )
    row = await one("plan.changed", plan, 200)
    assert (row["before"]["message_step"], row["after"]["message_step"]) == ("free", "starter")
    assert (row["before"]["sms_cap"], row["after"]["sms_cap"]) == (None, 900)

    before = await count(state)
    advanced = await client.post("/v1/admin/clock", json={"seconds": 3600, "reason": "test"}, headers=ADMIN)
    row = await one("clock.advanced", advanced, 200)
    assert row["organization_id"] is None
    moved = datetime.datetime.fromisoformat(row["after"]["now"]) - datetime.datetime.fromisoformat(
        row["before"]["now"]
    )
    assert moved == datetime.timedelta(hours=1)

    # reads leave nothing
    before = await count(state)
    for path in (
        f"/v1/admin/organizations/{org_id}",
        f"/v1/admin/organizations/{org_id}/plan",
        "/v1/admin/clock",
    ):
        assert (await client.get(path, headers=ADMIN)).status_code == 200
    assert await count(state) == before


async def test_the_tracking_id_is_the_one_of_the_request(client, state, tenant):
    """The row's tracking id is the request's: the one its error answers (or its log line)."""
    refused = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments",
        json={"amount_cents": -1, "description": "x"},
        headers=ADMIN,
    )
    assert refused.status_code == 402
    assert refused.headers["X-Tracking-Id"].startswith("trk_")
    answers = await asyncio.gather(
        *[
            client.post(
                f"/v1/admin/organizations/{tenant.org_id}/adjustments",
                json={"amount_cents": 1, "description": f"n{i}"},
                headers=ADMIN,
            )
            for i in range(3)
        ]
    )
    assert all(a.status_code == 201 for a in answers)
    tracked = {r["tracking_id"] for r in await rows(client, action="ledger.adjusted")}
    assert len(tracked) == 3  # one per request, never shared


async def test_refused_actions_leave_no_row(client, state, tenant):
    before = await count(state)
    refused = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments",
        json={"amount_cents": -100, "description": "too much", "reason": "try"},
        headers=ADMIN,
    )
    assert refused.status_code == 402, refused.text
    refund = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/refunds",
        json={"amount_cents": 100, "description": "too much"},
        headers=ADMIN,
    )
    assert refund.status_code == 402, refund.text
    unknown = uuid.uuid4()
    for method, path, body in (
        ("POST", f"/v1/admin/organizations/{unknown}/adjustments", {"amount_cents": 1, "description": "x"}),
        ("PUT", f"/v1/admin/organizations/{unknown}/status", {"status": "blocked"}),
        ("PUT", f"/v1/admin/organizations/{unknown}/overage", {"overage_limit_cents": 1}),
        ("PUT", f"/v1/admin/organizations/{unknown}/plan", {"message_step": "starter"}),
        ("POST", f"/v1/admin/keys/{unknown}/revoke", {"reason": "x"}),
        ("POST", f"/v1/admin/organizations/{unknown}/keys", {}),
        ("PUT", f"/v1/admin/organizations/{tenant.org_id}/plan", {"message_step": "nope"}),
        ("POST", "/v1/admin/organizations", {"name": "x", "currency": "xyz"}),
    ):
        answer = await client.request(method, path, json=body, headers=ADMIN)
        assert answer.status_code in (400, 404), (path, answer.text)
    assert await count(state) == before
    assert (await state.ledger.account(uuid.UUID(tenant.org_id))).free_cents == 0


async def test_a_failure_after_the_row_is_written_rolls_back_the_action_and_the_row(
    client, state, tenant, monkeypatch
):
    real = actions_module.record_audit

    async def then_fail(*args: Any, **kwargs: Any) -> int:
        await real(*args, **kwargs)  # the row is written, then the transaction fails
        raise Conflict("forced failure", code="forced")

    monkeypatch.setattr(actions_module, "record_audit", then_fail)
    before = await count(state)
    org = uuid.UUID(tenant.org_id)
    answers = [
        await client.post(
            f"/v1/admin/organizations/{tenant.org_id}/adjustments",
            json={"amount_cents": 900, "description": "x"},
            headers=ADMIN,
        ),
        await client.put(
            f"/v1/admin/organizations/{tenant.org_id}/status", json={"status": "blocked"}, headers=ADMIN
        ),
        await client.put(
            f"/v1/admin/organizations/{tenant.org_id}/overage", json={"overage_limit_cents": 5}, headers=ADMIN
        ),
        await client.post("/v1/admin/organizations", json={"name": "Ghost"}, headers=ADMIN),
        await client.post("/v1/admin/clock", json={"seconds": 60}, headers=ADMIN),
    ]
    assert [a.status_code for a in answers] == [409] * len(answers), [a.text for a in answers]
    monkeypatch.setattr(actions_module, "record_audit", real)
    assert await count(state) == before
    # ...and the actions themselves did not happen
    account = await state.ledger.account(org)
    assert (account.free_cents, account.overage_limit_cents) == (0, 0)
    assert (await state.orgs.get(org)).status == "verified"
    listed, _ = await state.orgs.list(search="Ghost")
    assert listed == []


async def test_an_idempotent_replay_leaves_no_second_row(client, state, tenant):
    before = await count(state)
    headers = {**ADMIN, "Idempotency-Key": "adjust-once"}
    body = {"amount_cents": 300, "description": "once", "reason": "r"}
    first = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments", json=body, headers=headers
    )
    again = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments", json=body, headers=headers
    )
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert await count(state) == before + 1


async def test_audit_rows_are_append_only(state, tenant, client):
    await client.put(
        f"/v1/admin/organizations/{tenant.org_id}/status", json={"status": "unverified"}, headers=ADMIN
    )
    for statement in ("UPDATE audit_events SET reason = 'edited'", "DELETE FROM audit_events"):
        with pytest.raises(Exception, match="append-only"):
            async with state.engine.begin() as conn:
                await conn.execute(text(statement))
    assert await count(state) >= 2


# -- GET /v1/admin/audit ------------------------------------------------------------------------------


async def test_filters_and_cursor(client, state, new_tenant):
    first = await new_tenant(name="First")
    second = await new_tenant(name="Second")
    named = await state.operator_keys.create(CLI_ACTOR, "alice", reason="on call")
    alice = {"Authorization": f"Bearer {named.api_key}"}
    for i in range(3):
        answer = await client.post(
            f"/v1/admin/organizations/{first.org_id}/adjustments",
            json={"amount_cents": 10 + i, "description": f"a{i}"},
            headers=alice,
        )
        assert answer.status_code == 201, answer.text
    await client.put(
        f"/v1/admin/organizations/{second.org_id}/status", json={"status": "blocked"}, headers=ADMIN
    )

    everything = await rows(client)
    ids = [int(r["id"]) for r in everything]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    assert [r["action"] for r in everything[:5]] == [
        "organization.status_set",
        "ledger.adjusted",
        "ledger.adjusted",
        "ledger.adjusted",
        "operator_key.created",
    ]

    by_org = await rows(client, org_id=first.org_id)
    assert {r["action"] for r in by_org} == {"organization.created", "ledger.adjusted"}
    assert all(r["organization_id"] == first.org_id for r in by_org)
    assert len(await rows(client, action="ledger.adjusted")) == 3
    by_alice = await rows(client, actor="alice", headers=alice)
    assert [r["after"]["amount_cents"] for r in by_alice] == [12, 11, 10]
    assert await rows(client, actor="cli:test") == [everything[4]]
    assert await rows(client, org_id=first.org_id, action="organization.status_set") == []

    # pages of 2 walk every row once, in order
    walked: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/admin/audit", params=params, headers=ADMIN)).json()
        assert len(page["data"]) <= 2 and page["limit"] == 2
        walked += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == everything

    # time window: since is inclusive, until exclusive
    newest = datetime.datetime.fromisoformat(everything[0]["created_at"])
    assert await rows(client, since=everything[0]["created_at"]) == [everything[0]]
    assert everything[0] not in await rows(client, until=everything[0]["created_at"])
    later = (newest + datetime.timedelta(days=1)).date().isoformat()
    assert await rows(client, since=later) == []
    assert len(await rows(client, until=later)) == len(everything)
    assert len(await rows(client, until=newest.date().isoformat())) == len(everything)  # the whole day
    # a window that ends before it starts is empty, not an error
    assert await rows(client, since=later, until=newest.date().isoformat()) == []


@pytest.mark.parametrize(
    "params, field",
    [
        ({"cursor": "abc"}, "cursor"),
        ({"since": "yesterday"}, "since"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"org_id": "not-a-uuid"}, "org_id"),
        ({"action": "DROP TABLE"}, "action"),
    ],
)
async def test_bad_filters_are_400(client, params, field):
    answer = await client.get("/v1/admin/audit", params=params, headers=ADMIN)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"].get("field") in (field, None) and body["trackingId"].startswith("trk_")


async def test_the_audit_trail_is_for_operators_only(client, tenant):
    assert (await client.get("/v1/admin/audit")).status_code == 401
    assert (await client.get("/v1/admin/audit", headers=tenant.headers)).status_code == 401


# -- named operator keys ----------------------------------------------------------------------------


async def test_named_operator_keys_act_under_their_label_until_revoked(client, state, tenant):
    issued = await state.operator_keys.create(CLI_ACTOR, "bob")
    assert issued.api_key.startswith("bfop_") and issued.prefix == issued.api_key[:9]
    bob = {"Authorization": f"Bearer {issued.api_key}"}
    adjusted = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/adjustments",
        json={"amount_cents": 42, "description": "by bob", "reason": "ticket 7"},
        headers=bob,
    )
    assert adjusted.status_code == 201, adjusted.text
    latest = (await rows(client))[0]
    assert (latest["actor"], latest["reason"]) == ("bob", "ticket 7")
    created = (await rows(client, action="operator_key.created"))[0]
    assert created["actor"] == "cli:test" and created["after"] == {"label": "bob", "prefix": issued.prefix}
    assert issued.api_key not in json.dumps(created)

    # a second key with a live label is refused; the key works until it is revoked
    with pytest.raises(Conflict):
        await state.operator_keys.create(CLI_ACTOR, "bob")
    revoked = await state.operator_keys.revoke(CLI_ACTOR, "bob", reason="left")
    assert revoked.revoked_at is not None
    refused = await client.get("/v1/admin/audit", headers=bob)
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_admin_key"
    row = (await rows(client, action="operator_key.revoked"))[0]
    assert (row["target"], row["reason"], row["after"]["revoked"]) == (str(issued.id), "left", True)
    # the label may be given again once the old key is revoked
    again = await state.operator_keys.create(CLI_ACTOR, "bob")
    assert again.api_key != issued.api_key


async def test_labels_are_checked(state):
    from billfold.errors import NotFound, ValidationFailed

    for label in ("", "bootstrap", "cli:me", "x" * 101, "tab\there"):
        with pytest.raises(ValidationFailed):
            await state.operator_keys.create(CLI_ACTOR, label)
    with pytest.raises(NotFound):
        await state.operator_keys.revoke(CLI_ACTOR, "nobody")
    assert await state.audit.count() == 0


async def test_named_keys_open_operator_routes_without_the_bootstrap_key(state):
    state.operator = OperatorAuth({}, state.operator_keys)
    async with open_client(state) as client:
        closed = await client.get("/v1/admin/audit", headers=ADMIN)
        assert closed.status_code == 401 and closed.json()["code"] == "admin_disabled"
        issued = await state.operator_keys.create(CLI_ACTOR, "carol")
        assert (await client.get("/v1/admin/audit", headers=ADMIN)).json()["code"] == "invalid_admin_key"
        opened = await client.get("/v1/admin/audit", headers={"Authorization": f"Bearer {issued.api_key}"})
        assert opened.status_code == 200
        # a tenant route does not take an operator key
        balance = await client.get(
            "/v1/billing/balance", headers={"Authorization": f"Bearer {issued.api_key}"}
        )
        assert balance.status_code == 401


# -- a plugin's operator action ---------------------------------------------------------------------


class PinPlugin:
    """A plugin with an audited operator action, written with the public API only."""

    @billfold.hookimpl
    def billfold_routes(self, state: Any) -> list[Any]:
        @post(
            "/v1/admin/organizations/{org_id:uuid}/pin-test",
            guards=[billfold.operator_guard],
            status_code=200,
        )
        async def pin(
            org_id: FromPath[uuid.UUID],
            data: JSONBody[dict[str, Any]],
            audit_actor: NamedDependency[billfold.AuditActor],
        ) -> dict[str, Any]:
            async with state.db.transaction() as conn:
                row = await billfold.record_audit(
                    conn,
                    audit_actor,
                    "tier.pinned",
                    org_id=org_id,
                    target="sms",
                    before={"tier": None},
                    after={"tier": data["tier"], "until": datetime.date(2026, 12, 31)},
                    reason=data.get("reason"),
                )
                if data.get("fail"):
                    raise billfold.Conflict("refused after the row was written", code="refused")
            return {"audit_id": row}

        return [pin]


async def test_a_plugin_audits_its_operator_action_through_the_public_api(make_state, tenant_org):
    from billfold.plugins import create_plugin_manager

    pm = create_plugin_manager()
    pm.register(PinPlugin(), name="pin-test")
    state = make_state(pm=pm)
    try:
        async with open_client(state) as client:
            org = await tenant_org(client)
            url = f"/v1/admin/organizations/{org}/pin-test"
            pinned = await client.post(url, json={"tier": "scale", "reason": "contract"}, headers=ADMIN)
            assert pinned.status_code == 200, pinned.text
            row = (await rows(client, action="tier.pinned"))[0]
            assert (row["id"], row["actor"], row["organization_id"]) == (
                str(pinned.json()["audit_id"]),
                "bootstrap",
                org,
            )
            assert row["after"] == {"tier": "scale", "until": "2026-12-31"} and row["reason"] == "contract"
            assert row["tracking_id"].startswith("trk_")
            before = await state.audit.count()
            refused = await client.post(url, json={"tier": "x", "fail": True}, headers=ADMIN)
            assert refused.status_code == 409
            assert await state.audit.count() == before
    finally:
        await state.engine.dispose()


@pytest.fixture
def tenant_org() -> Any:
    async def make(client: httpx.AsyncClient) -> str:
        created = await client.post("/v1/admin/organizations", json={"name": "Pinned"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        org_id: str = created.json()["id"]
        return org_id

    return make


# -- the command line ---------------------------------------------------------------------------------


@pytest.fixture
def cli_db(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "audit.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


async def cli(*args: str, url: str, env: dict[str, str] | None = None) -> Any:
    return await asyncio.to_thread(run_cli, *args, database_url=url, env={"USER": "dana", **(env or {})})


async def audit_json(url: str, *args: str) -> list[dict[str, Any]]:
    listed = await cli("audit", "--json", *args, url=url)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)["data"]


async def test_cli_actions_leave_one_row_each(cli_db):
    url = cli_db
    created = await cli("orgs", "create", "--name", "Acme", "--reason", "signed", "--json", url=url)
    assert created.returncode == 0, created.stderr
    org = json.loads(created.stdout)
    steps = [
        (
            "ledger.adjusted",
            [
                "ledger",
                "adjust",
                "--org",
                org["id"],
                "--amount-cents",
                "900",
                "--description",
                "x",
                "--reason",
                "promo",
            ],
        ),
        ("api_key.created", ["keys", "create", "--org", org["id"], "--name", "ci"]),
    ]
    for action, args in steps:
        before = len(await audit_json(url))
        done = await cli(*args, url=url)
        assert done.returncode == 0, done.stderr
        after = await audit_json(url)
        assert len(after) == before + 1 and after[0]["action"] == action
        assert after[0]["actor"] == "cli:dana" and after[0]["tracking_id"] is None
    key_id = (await audit_json(url, "--action", "api_key.created"))[0]["target"]
    revoked = await cli("keys", "revoke", key_id, "--reason", "rotated", url=url)
    assert revoked.returncode == 0, revoked.stderr

    everything = await audit_json(url)
    assert [r["action"] for r in everything] == [
        "api_key.revoked",
        "api_key.created",
        "ledger.adjusted",
        "organization.created",
    ]
    assert everything[0]["reason"] == "rotated" and everything[2]["reason"] == "promo"
    assert everything[3]["reason"] == "signed"

    # a refused adjustment leaves nothing
    refused = await cli(
        "ledger", "adjust", "--org", org["id"], "--amount-cents", "-5000", "--description", "x", url=url
    )
    assert refused.returncode == 1 and "insufficient_funds" in refused.stderr
    assert len(await audit_json(url)) == 4

    # the text listing, filtered and paged
    text_listing = await cli("audit", "--org", org["id"], "--limit", "2", url=url)
    assert text_listing.returncode == 0, text_listing.stderr
    lines = [line for line in text_listing.stdout.splitlines() if not line.startswith(" ")]
    assert "api_key.revoked" in lines[0] and "cli:dana" in lines[0] and "rotated" in lines[0]
    assert "api_key.created" in lines[1]
    assert lines[-1].startswith("more: --cursor ")
    cursor = lines[-1].split()[-1]
    rest = await audit_json(url, "--org", org["id"], "--cursor", cursor)
    assert [r["action"] for r in rest] == ["ledger.adjusted", "organization.created"]


async def test_cli_operator_keys(cli_db):
    url = cli_db
    created = await cli("operator-keys", "create", "--label", "erin", "--json", url=url)
    assert created.returncode == 0, created.stderr
    issued = json.loads(created.stdout)
    assert issued["label"] == "erin" and issued["api_key"].startswith("bfop_")
    text_created = await cli("operator-keys", "create", "--label", "frank", url=url)
    assert text_created.returncode == 0 and "shown once" in text_created.stdout
    duplicate = await cli("operator-keys", "create", "--label", "erin", url=url)
    assert (
        duplicate.returncode == 1
        and "label_taken" in duplicate.stderr
        and "Traceback" not in duplicate.stderr
    )

    listed = await cli("operator-keys", "list", url=url)
    assert listed.returncode == 0
    assert "erin" in listed.stdout and "frank" in listed.stdout
    assert issued["api_key"] not in listed.stdout

    revoked = await cli("operator-keys", "revoke", "erin", "--reason", "left the team", url=url)
    assert revoked.returncode == 0, revoked.stderr
    listed = await cli("operator-keys", "list", "--json", url=url)
    assert [k["label"] for k in json.loads(listed.stdout)] == ["frank"]
    again = await cli("operator-keys", "revoke", "erin", url=url)
    assert again.returncode == 1 and "operator_key_not_found" in again.stderr

    trail = await audit_json(url, "--actor", "cli:dana")
    assert [r["action"] for r in trail] == [
        "operator_key.revoked",
        "operator_key.created",
        "operator_key.created",
    ]
    assert trail[0]["reason"] == "left the team"
