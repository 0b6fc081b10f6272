"""Authentication and organization scoping: tenant keys (Bearer or Token), revocation, the
operator key, and 403 on paths that name another organization."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select, text

from billfold.api.auth import OperatorAuth
from billfold.orgs.keys import KeyCache, hash_key
from billfold.orgs.models import ApiKey
from billfold.orgs.revocations import APPLICATION_NAME
from conftest import ADMIN, assert_error, open_client, run_cli


async def test_missing_header_is_401(client):
    body = assert_error(await client.get("/v1/billing"), 401, "missing_api_key")
    assert "Bearer" in body["error"]["fix"]
    # document 004's route says the same in its own error shape
    body = assert_error(await client.get("/v1/billing/balance"), 401, "missing_api_key")
    assert "Bearer" in body["details"][0]["fix"]


@pytest.mark.parametrize(
    "header",
    ["Bearer sk_test_doesnotexist", "Token sk_test_doesnotexist", "Bearer " + "x" * 500],
)
async def test_unknown_key_is_401(client, tenant, header):
    assert_error(
        await client.get("/v1/billing/balance", headers={"Authorization": header}), 401, "invalid_api_key"
    )


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "sk_test_abc"])
async def test_malformed_header_is_401(client, header):
    assert_error(
        await client.get("/v1/billing/balance", headers={"Authorization": header}),
        401,
        "invalid_authorization_header",
    )


@pytest.mark.parametrize("scheme", ["Bearer", "Token", "bearer", "token"])
async def test_bearer_and_token_schemes_both_work(client, new_tenant, scheme):
    tenant = await new_tenant(balance=700)
    response = await client.get(
        "/v1/billing/balance", headers={"Authorization": f"{scheme} {tenant.api_key}"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["free"] == 7.0  # document 004: major units


async def test_keys_are_prefixed_and_only_shown_once(client, tenant, state):
    assert tenant.api_key.startswith("sk_test_")
    assert len(tenant.api_key) > len("sk_test_") + 24
    # only a hash is stored: the raw key is nowhere in the keys table
    async with state.engine.connect() as conn:
        rows = (await conn.execute(select(ApiKey.__table__.c.prefix, ApiKey.__table__.c.key_hash))).all()
    assert rows
    for prefix, key_hash in rows:
        assert tenant.api_key not in (prefix, key_hash)
        assert len(key_hash) == 64
    assert any(tenant.api_key.startswith(prefix) for prefix, _ in rows)


async def test_admin_revocation(client, tenant):
    second = await client.post(
        f"/v1/admin/organizations/{tenant.org_id}/keys", json={"name": "ci"}, headers=ADMIN
    )
    assert second.status_code == 201, second.text
    key = second.json()
    assert key["organization_id"] == tenant.org_id
    assert key["api_key"].startswith(key["prefix"])
    second_headers = {"Authorization": f"Token {key['api_key']}"}
    assert (await client.get("/v1/billing/balance", headers=second_headers)).status_code == 200

    revoked = await client.post(f"/v1/admin/keys/{key['id']}/revoke", headers=ADMIN)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"id": key["id"], "revoked": True}

    assert_error(await client.get("/v1/billing/balance", headers=second_headers), 401, "invalid_api_key")
    # the organization's other key is untouched
    assert (await client.get("/v1/billing/balance", headers=tenant.headers)).status_code == 200
    # revoking twice, or an unknown key, is 404
    assert_error(
        await client.post(f"/v1/admin/keys/{key['id']}/revoke", headers=ADMIN), 404, "api_key_not_found"
    )
    assert_error(
        await client.post(f"/v1/admin/keys/{uuid.uuid4()}/revoke", headers=ADMIN), 404, "api_key_not_found"
    )


async def test_tenant_revokes_its_own_keys_only(client, new_tenant):
    alice = await new_tenant(name="Alice")
    bob = await new_tenant(name="Bob")
    spare = (await client.post(f"/v1/admin/organizations/{alice.org_id}/keys", headers=ADMIN)).json()
    spare_headers = {"Authorization": f"Bearer {spare['api_key']}"}

    # Bob cannot revoke Alice's key: it is not his (404, and the key keeps working)
    assert_error(await client.post(f"/v1/api-keys/{spare['id']}/revoke", headers=bob.headers), 404)
    assert (await client.get("/v1/billing/balance", headers=spare_headers)).status_code == 200

    # Alice revokes it with her main key
    revoked = await client.post(f"/v1/api-keys/{spare['id']}/revoke", headers=alice.headers)
    assert revoked.status_code == 200, revoked.text
    assert_error(await client.get("/v1/billing/balance", headers=spare_headers), 401, "invalid_api_key")
    assert (await client.get("/v1/billing/balance", headers=alice.headers)).status_code == 200


async def test_a_key_can_revoke_itself(client, state, tenant):
    keys = await _key_ids(state, tenant.org_id)
    assert len(keys) == 1
    revoked = await client.post(f"/v1/api-keys/{keys[0]}/revoke", headers=tenant.headers)
    assert revoked.status_code == 200, revoked.text
    assert_error(await client.get("/v1/billing/balance", headers=tenant.headers), 401, "invalid_api_key")


async def test_revocation_is_immediate_despite_the_key_cache(make_state):
    state = make_state({"auth": {"key_cache_seconds": 300}})
    try:
        async with open_client(state) as client:
            created, headers = await _organization(client, "Cached")
            assert (await client.get("/v1/billing/balance", headers=headers)).status_code == 200  # now cached
            assert (
                await client.post(f"/v1/admin/keys/{created['key_id']}/revoke", headers=ADMIN)
            ).status_code == 200
            assert_error(await client.get("/v1/billing/balance", headers=headers), 401, "invalid_api_key")
    finally:
        await state.engine.dispose()


async def _organization(client, name: str) -> tuple[dict, dict[str, str]]:
    """A new organization (its creation answer) and the headers of its first key."""
    created = await client.post("/v1/admin/organizations", json={"name": name}, headers=ADMIN)
    assert created.status_code == 201, created.text
    body = created.json()
    return body, {"Authorization": f"Bearer {body['api_key']}"}


async def _key_ids(state, org_id: str) -> list[str]:
    api_keys = ApiKey.__table__
    async with state.engine.connect() as conn:
        rows = await conn.execute(
            select(api_keys.c.id).where(api_keys.c.org_id == uuid.UUID(org_id)).order_by(api_keys.c.id)
        )
        return [str(r.id) for r in rows]


# -- organization scoping -------------------------------------------------------------------------

PATH_ORG_ROUTES = [
    ("GET", "/v1/orgs/{org}/billing", None),
    ("PATCH", "/v1/orgs/{org}/billing", {"auto_reload_enabled": False}),
    ("GET", "/v1/organizations/{org}/billing", None),
    ("PATCH", "/v1/organizations/{org}/billing", {"autoRechargeEnabled": False}),
    ("GET", "/v1/billing/{org}/credits", None),
    ("GET", "/v1/billing/{org}/credits/history", None),
    ("GET", "/v1/billing/{org}/credits/history?limit=5", None),
]
DOCUMENT_002 = ("/v1/organizations/", "/v1/billing/{org}/")
"""Document 002's routes answer its tagged errors, which carry no code (the `_tag` says Forbidden)."""


@pytest.mark.parametrize(("method", "path", "body"), PATH_ORG_ROUTES)
async def test_path_naming_another_organization_is_403(client, new_tenant, method, path, body):
    alice = await new_tenant(name="Alice", balance=100)
    bob = await new_tenant(name="Bob", balance=200)

    own = await client.request(method, path.format(org=alice.org_id), json=body, headers=alice.headers)
    assert own.status_code == 200, own.text

    for other in (bob.org_id, str(uuid.uuid4()), "not-an-org"):
        response = await client.request(method, path.format(org=other), json=body, headers=alice.headers)
        assert_error(response, 403, None if path.startswith(DOCUMENT_002) else "organization_mismatch")

    # and without a key it is 401, not 403
    assert_error(await client.request(method, path.format(org=bob.org_id), json=body), 401)


async def test_403_leaks_nothing_of_the_other_organization(client, new_tenant):
    alice = await new_tenant(name="Alice")
    bob = await new_tenant(name="Bob", balance=4242)
    for path in ("/v1/billing/{org}/credits", "/v1/organizations/{org}/billing", "/v1/orgs/{org}/billing"):
        response = await client.get(path.format(org=bob.org_id), headers=alice.headers)
        assert_error(response, 403)
        assert "4242" not in response.text


# -- operator routes ------------------------------------------------------------------------------

ADMIN_ROUTES = [
    ("POST", "/v1/admin/organizations", {"name": "Mallory"}),
    ("GET", "/v1/admin/organizations/{org}", None),
    ("POST", "/v1/admin/organizations/{org}/keys", {}),
    (
        "POST",
        "/v1/admin/organizations/{org}/adjustments",
        {"amount_cents": 100000, "description": "free money"},
    ),
    ("POST", "/v1/admin/organizations/{org}/refunds", {"amount_cents": 1, "description": "x"}),
    ("PUT", "/v1/admin/organizations/{org}/overage", {"overage_limit_cents": 100000}),
    ("POST", "/v1/admin/keys/{key}/revoke", None),
    ("GET", "/v1/admin/plugins", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_admin_routes_refuse_tenant_keys(client, state, tenant, method, path, body):
    key_id = (await _key_ids(state, tenant.org_id))[0]
    url = path.format(org=tenant.org_id, key=key_id)
    for headers in (
        tenant.headers,
        {"Authorization": f"Token {tenant.api_key}"},
        {},
        {"Authorization": "Bearer nope"},
    ):
        assert_error(await client.request(method, url, json=body, headers=headers), 401)
    # nothing happened: the balance is untouched and the key still works
    balance = await client.get("/v1/billing/balance", headers=tenant.headers)
    assert balance.status_code == 200
    assert balance.json()["free"] == 0


async def test_admin_key_is_not_a_tenant_key(client, tenant):
    assert_error(await client.get("/v1/billing/balance", headers=ADMIN), 401, "invalid_api_key")


async def test_admin_routes_are_closed_without_an_operator_key(state, monkeypatch):
    state.operator = OperatorAuth({})
    async with open_client(state) as client:
        assert_error(await client.get("/v1/admin/plugins", headers=ADMIN), 401, "admin_disabled")


# -- revocation across processes -------------------------------------------------------------------

CACHING = {"auth": {"key_cache_seconds": 300, "key_cache_notified_seconds": 3600}}


def test_a_lookup_that_raced_a_revocation_is_not_cached():
    cache = KeyCache(ttl=300)
    org_id = uuid.uuid4()
    started_at = cache.generation  # the SELECT on api_keys starts...
    cache.forget("hash")  # ...the key is revoked meanwhile...
    cache.put("hash", org_id, started_at)  # ...and the stale answer arrives
    assert cache.get("hash") is None
    cache.put("hash", org_id, cache.generation)
    assert cache.get("hash") == org_id


async def _wait_for(predicate, seconds: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_revocation_by_another_process_is_seen_at_once_on_postgres(
    make_state, is_postgres, database_url
):
    if not is_postgres:
        pytest.skip("revocation notices are PostgreSQL's (SQLite bounds the cache by key_cache_seconds)")
    serving = make_state(CACHING)
    try:
        async with open_client(serving) as client:
            assert serving.revocations.listening
            created, headers = await _organization(client, "Elsewhere")
            assert (await client.get("/v1/billing/balance", headers=headers)).status_code == 200
            assert serving.key_cache.get(hash_key(created["api_key"])) is not None  # cached for an hour

            # Another process (the CLI) revokes the key; this one never touched the row.
            revoked = await asyncio.to_thread(
                run_cli, "keys", "revoke", created["key_id"], database_url=database_url
            )
            assert revoked.returncode == 0, revoked.stderr

            async def refused() -> bool:
                return (await client.get("/v1/billing/balance", headers=headers)).status_code == 401

            assert await _wait_for(refused), "the revoked key still authenticates"
            assert_error(await client.get("/v1/billing/balance", headers=headers), 401, "invalid_api_key")
    finally:
        await serving.close()


async def test_a_lost_notice_connection_clears_the_cache_and_comes_back(make_state, is_postgres):
    if not is_postgres:
        pytest.skip("revocation notices are PostgreSQL's")
    serving = make_state(CACHING)
    try:
        async with open_client(serving) as client:
            created, headers = await _organization(client, "Cut")
            assert (await client.get("/v1/billing/balance", headers=headers)).status_code == 200
            key_hash = hash_key(created["api_key"])
            assert serving.key_cache.get(key_hash) is not None

            async with serving.engine.begin() as conn:
                killed = await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :name AND datname = current_database()"
                    ),
                    {"name": APPLICATION_NAME},
                )
                assert killed.scalars().all() == [True]

            async def forgotten() -> bool:
                return serving.key_cache.get(key_hash) is None

            assert await _wait_for(forgotten), "the cache outlived the notice connection"

            async def listening_again() -> bool:
                return serving.revocations.listening

            assert await _wait_for(listening_again), "the listener did not reconnect"
            # and notices flow on the new connection
            assert (await client.get("/v1/billing/balance", headers=headers)).status_code == 200
            assert serving.key_cache.get(key_hash) is not None
            async with serving.engine.begin() as conn:
                await conn.execute(
                    text("UPDATE api_keys SET revoked_at = now() WHERE key_hash = :h"), {"h": key_hash}
                )
            assert await _wait_for(forgotten), "a revocation by hand was not announced"
            assert_error(await client.get("/v1/billing/balance", headers=headers), 401, "invalid_api_key")
    finally:
        await serving.close()


def test_a_key_revoked_here_is_never_cached_again():
    """Between the revoking statement and its commit, a lookup in the same process still sees the
    key live: what it finds must not be cached."""
    cache = KeyCache(ttl=300)
    org_id = uuid.uuid4()
    cache.revoked("hash")  # the revoking transaction has run its UPDATE, not yet committed
    cache.put("hash", org_id, cache.generation)  # a lookup that started after it
    assert cache.get("hash") is None


async def test_without_the_trigger_the_listener_stays_off(make_state, is_postgres):
    """A database without migration 0002's trigger announces nothing: the process must not trust
    the long lifetime (it would keep revoked keys for an hour)."""
    if not is_postgres:
        pytest.skip("revocation notices are PostgreSQL's")
    serving = make_state(CACHING)
    async with serving.engine.begin() as conn:
        await conn.execute(text("DROP TRIGGER api_keys_notify_change ON api_keys"))
    try:
        async with open_client(serving):
            assert not serving.revocations.listening
            assert serving.key_cache.lifetime == 300  # key_cache_seconds, not the notified hour
    finally:
        async with serving.engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE TRIGGER api_keys_notify_change AFTER UPDATE OF revoked_at, key_hash, org_id "
                    "OR DELETE ON api_keys FOR EACH ROW EXECUTE FUNCTION billfold_api_key_changed()"
                )
            )
        await serving.close()
