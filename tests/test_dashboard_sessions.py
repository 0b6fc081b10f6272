"""Dashboard sessions kept in an encrypted cookie (Litestar's client-side session backend), over
HTTP on the real app and database: what the cookie hides and holds, what ends a session (time,
revocation, sign-out, tampering), one ``BILLFOLD_SESSION_SECRET`` shared by several apps, and
``billfold serve`` giving every worker (and every reloaded worker) the same secret."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from billfold.api.app import Billfold, create_app
from billfold.audit.service import AuditActor
from billfold.dashboard import security
from billfold.dashboard.security import (
    SECRET_ENV,
    SESSION_COOKIE,
    SESSION_SECONDS,
    SessionSecretError,
    parse_session_secret,
)
from billfold.orgs.keys import hash_key
from conftest import ADMIN_KEY, BILLFOLD_CLI, ROOT, config_text, open_client, run_cli
from test_dashboard import csrf, sign_in

SECRET = bytes(range(32))
CLI_ACTOR = AuditActor(who="cli:test")
AAD_MARK = b"additional_authenticated_data="


@pytest.fixture
def shared_secret(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """BILLFOLD_SESSION_SECRET for the apps this test builds."""
    monkeypatch.setenv(SECRET_ENV, SECRET.hex())
    return SECRET


def set_cookie(response: httpx.Response, name: str = SESSION_COOKIE) -> str:
    """The Set-Cookie header the response sends for ``name``."""
    found = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{name}=")]
    assert len(found) == 1, response.headers.get_list("set-cookie")
    return found[0]


def cookie_value(response: httpx.Response, name: str = SESSION_COOKIE) -> str:
    """The cookie's value as set (base64 is sent quoted)."""
    return set_cookie(response, name).split(";", 1)[0].split("=", 1)[1].strip('"')


def cleared(response: httpx.Response) -> bool:
    """Whether the response deletes the session cookie."""
    header = set_cookie(response)
    return header.startswith(f"{SESSION_COOKIE}=null;") and "expires=" in header


def decrypt(value: str, secret: bytes) -> dict[str, Any]:
    """A session cookie opened with the secret: AES-GCM over the JSON session (nonce first, the
    expiry as authenticated clear text last)."""
    raw = base64.b64decode(value)
    nonce, rest = raw[:12], raw[12:]
    at = rest.index(AAD_MARK)
    opened: dict[str, Any] = json.loads(AESGCM(secret).decrypt(nonce, rest[:at], rest[at + len(AAD_MARK) :]))
    return opened


async def page_with(client: httpx.AsyncClient, cookie: str) -> httpx.Response:
    """GET the organizations page sending only this session cookie."""
    client.cookies.clear()
    return await client.get("/dashboard/organizations", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})


def refused(response: httpx.Response) -> bool:
    return response.status_code == 302 and response.headers["location"].startswith("/dashboard/sign-in")


# -- the cookie -------------------------------------------------------------------------------------


async def test_the_cookie_is_encrypted_and_holds_only_the_label_key_id_and_sign_in_time(
    state: Billfold, shared_secret: bytes
) -> None:
    async with open_client(state) as client:
        before = int(time.time())
        signed = await sign_in(client)
        assert signed.status_code == 302
        header = set_cookie(signed)
        assert "HttpOnly" in header and "Path=/dashboard" in header and "SameSite=lax" in header
        assert f"Max-Age={SESSION_SECONDS}" in header
        assert "Secure" not in header  # not production: the test server speaks plain HTTP
        value = cookie_value(signed)
        raw = base64.b64decode(value)
        for readable in (value.encode(), raw):
            assert b"bootstrap" not in readable and b"label" not in readable
            assert ADMIN_KEY.encode() not in readable and hash_key(ADMIN_KEY).encode() not in readable
            with pytest.raises(ValueError):
                json.loads(readable)
        session = decrypt(value, shared_secret)
        assert set(session) == {"label", "key", "at"}
        assert session["label"] == "bootstrap" and re.fullmatch(r"[0-9a-f]{16}", session["key"])
        assert before <= session["at"] <= time.time()
        assert len(value) < 300
        # another key cannot open it
        with pytest.raises(InvalidTag):
            decrypt(value, bytes(32))
        assert (await client.get("/dashboard/organizations")).status_code == 200


async def test_a_tampered_or_forged_cookie_is_a_signed_out_page(client: httpx.AsyncClient) -> None:
    signed = await sign_in(client)
    value = cookie_value(signed)
    assert (await page_with(client, value)).status_code == 200
    raw = bytearray(base64.b64decode(value))
    raw[20] ^= 1  # one bit of the ciphertext
    tampered = base64.b64encode(bytes(raw)).decode()
    now = int(time.time())
    plain = json.dumps({"label": "bootstrap", "key": "0" * 16, "at": now}).encode()
    forged = [
        tampered,
        value[:-8] + ("A" * 8 if not value.endswith("A" * 8) else "B" * 8),
        base64.b64encode(plain).decode(),
        base64.b64encode(b"n" * 12 + plain + AAD_MARK + b'{"expires_at": 99999999999}').decode(),
        # clear-text expiry parts Litestar itself cannot read: no session, not a server error
        base64.b64encode(b"n" * 12 + AAD_MARK + b"not json").decode(),
        base64.b64encode(b"n" * 12 + AAD_MARK + b"{}").decode(),
        base64.b64encode(b"n" * 12 + AAD_MARK + b'{"expires_at": "soon"}').decode(),
        "%%% not base64 %%%",
        "null",
    ]
    for cookie in forged:
        answer = await page_with(client, cookie)
        assert refused(answer), (cookie, answer.status_code, answer.text[:300])
        assert cleared(answer), cookie
    sign_in_page = await client.get("/dashboard/sign-in", headers={"Cookie": f"{SESSION_COOKIE}={tampered}"})
    assert sign_in_page.status_code == 200 and "operator key" in sign_in_page.text.lower()
    assert cleared(sign_in_page)


# -- what ends a session ------------------------------------------------------------------------------


async def test_a_session_ends_its_time_after_sign_in_however_often_it_is_used(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed_at = time.time()
    monkeypatch.setattr(security, "wall_clock", lambda: signed_at)
    await sign_in(client)
    # used a minute before the end: still open, and using it does not move its end
    monkeypatch.setattr(security, "wall_clock", lambda: signed_at + SESSION_SECONDS - 60)
    assert (await client.get("/dashboard/organizations")).status_code == 200
    monkeypatch.setattr(security, "wall_clock", lambda: signed_at + SESSION_SECONDS)
    late = await client.get("/dashboard/organizations")
    assert refused(late) and cleared(late)
    monkeypatch.setattr(security, "wall_clock", time.time)
    assert refused(await client.get("/dashboard/organizations"))  # the cookie is gone
    assert (await sign_in(client)).status_code == 302
    assert (await client.get("/dashboard/organizations")).status_code == 200


async def test_revoking_a_named_key_ends_its_sessions_at_once(
    client: httpx.AsyncClient, state: Billfold
) -> None:
    issued = await state.operator_keys.create(CLI_ACTOR, "alice")
    signed = await sign_in(client, issued.api_key)
    assert signed.status_code == 302
    value = cookie_value(signed)
    page = await client.get("/dashboard/organizations")
    assert page.status_code == 200 and ">alice<" in page.text
    await state.operator_keys.revoke(CLI_ACTOR, "alice", reason="left")
    after = await client.get("/dashboard/organizations")
    assert refused(after) and cleared(after)
    # a new key with the same label is another key: the old session stays ended
    again = await state.operator_keys.create(CLI_ACTOR, "alice")
    assert refused(await page_with(client, value))
    assert (await sign_in(client, issued.api_key)).status_code == 401
    assert (await sign_in(client, again.api_key)).status_code == 302


async def test_sign_out_clears_the_cookie(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    page = await client.get("/dashboard/organizations")
    assert page.status_code == 200
    out = await client.post("/dashboard/sign-out", data={"_csrf_token": csrf(page)})
    assert out.status_code == 302 and out.headers["location"] == "/dashboard/sign-in"
    assert cleared(out)
    assert SESSION_COOKIE not in client.cookies
    assert refused(await client.get("/dashboard/organizations"))


# -- the secret --------------------------------------------------------------------------------------


async def test_apps_with_the_same_secret_accept_each_others_sessions(
    state: Billfold,
    make_state: Callable[..., Billfold],
    shared_secret: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = make_state()
    try:
        async with open_client(state) as first, open_client(other) as second:
            await sign_in(first)
            page = await first.get("/dashboard/organizations")
            assert page.status_code == 200
            cookies = {"Cookie": "; ".join(f"{name}={value}" for name, value in first.cookies.items())}
            assert (await second.get("/dashboard/organizations", headers=cookies)).status_code == 200
            # the CSRF token of one app's page is good on the other too
            out = await second.post("/dashboard/sign-out", data={"_csrf_token": csrf(page)}, headers=cookies)
            assert out.status_code == 302 and cleared(out)
            value = first.cookies[SESSION_COOKIE]
    finally:
        await other.engine.dispose()

    # another secret, or another bootstrap key under the same secret: the session is refused
    for name, changed in (
        (SECRET_ENV, bytes(range(1, 33)).hex()),
        ("BILLFOLD_ADMIN_API_KEY", "new_admin_key"),
    ):
        with monkeypatch.context() as patch:
            patch.setenv(name, changed)
            third = make_state()
            try:
                async with open_client(third) as client:
                    assert refused(await page_with(client, value)), name
            finally:
                await third.engine.dispose()


@pytest.mark.parametrize(
    "value",
    [
        "00" * 20,  # 20 bytes in hex
        base64.b64encode(b"x" * 12).decode(),  # 12 bytes in base64
        "not a secret at all!",
    ],
)
async def test_a_wrong_secret_stops_the_app_with_a_clear_error(
    state: Billfold, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(SECRET_ENV, value)
    with pytest.raises(SessionSecretError) as refused_start:
        create_app(state)
    message = str(refused_start.value)
    assert SECRET_ENV in message and value not in message
    assert "16, 24 or 32 bytes" in message or "neither hex nor base64" in message


def test_secrets_are_read_as_hex_then_base64() -> None:
    for size in (16, 24, 32):
        key = os.urandom(size)
        assert parse_session_secret(key.hex()) == key
        assert parse_session_secret(key.hex().upper()) == key
        assert parse_session_secret(base64.b64encode(key).decode()) == key
        assert parse_session_secret(base64.urlsafe_b64encode(key).decode().rstrip("=")) == key
    with pytest.raises(SessionSecretError, match="it is 8"):
        parse_session_secret("ab" * 8)


def test_serve_refuses_a_wrong_secret_before_starting(database_url: str) -> None:
    value = "0badc0de" * 5
    done = run_cli("serve", "--port", "1", database_url=database_url, env={SECRET_ENV: value})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Error: BILLFOLD_SESSION_SECRET must be 16, 24 or 32 bytes, it is 20" in done.stderr
    assert value not in done.stdout + done.stderr
    assert "Billfold" not in done.stdout  # no start-up summary: nothing started


# -- billfold serve ------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """The server processes uvicorn's supervisor ``pid`` runs (multiprocessing's spawned children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def _secret_of(pid: int) -> str | None:
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = item.partition(b"=")
        if name.decode() == SECRET_ENV:
            return value.decode()
    return None


class _Serve:
    """`billfold serve --workers N` on 127.0.0.1, its output in a file."""

    def __init__(self, tmp_path: Path, database_url: str, workers: int, name: str) -> None:
        config = tmp_path / "billing.yaml"
        config.write_text(config_text(database_url=database_url))
        env = {
            **os.environ,
            "BILLFOLD_CONFIG": str(config),
            "BILLFOLD_DATABASE_URL": database_url,
            "BILLFOLD_ADMIN_API_KEY": ADMIN_KEY,
        }
        env.pop("BILLFOLD_PLUGINS", None)
        env.pop(SECRET_ENV, None)
        self.log = tmp_path / f"{name}.log"
        self.workers = workers
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [
                    *(str(BILLFOLD_CLI), "serve", "--host", "127.0.0.1", "--port", str(port)),
                    *("--workers", str(workers), "--no-migrate"),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> list[int]:
        deadline = time.monotonic() + 120
        while True:
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            try:
                healthy = httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                healthy = False
            workers = _children(self.process.pid)
            if healthy and len(workers) == self.workers:
                return workers
            time.sleep(0.3)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def serve(tmp_path: Path, database_url: str) -> Iterator[Callable[[str], _Serve]]:
    started: list[_Serve] = []

    def start(name: str) -> _Serve:
        server = _Serve(tmp_path, database_url, workers=2, name=name)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def _wait_for(log: Path, text: str, after: int) -> None:
    deadline = time.monotonic() + 120
    while text not in log.read_text(errors="replace")[after:]:
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.2)


def _signed_in_cookie(url: str) -> str:
    with httpx.Client(base_url=url, timeout=30) as client:
        form = client.get("/dashboard/sign-in")
        signed = client.post("/dashboard/sign-in", data={"key": ADMIN_KEY, "_csrf_token": csrf(form)})
        assert signed.status_code == 302, signed.text[:500]
        return cookie_value(signed)


def _pages(url: str, cookie: str, count: int) -> list[int]:
    """The status of ``count`` page requests, each on a new connection (so the kernel spreads them
    over the workers), sending ``cookie``."""
    statuses = []
    for _ in range(count):
        with httpx.Client(base_url=url, timeout=30) as client:
            answer = client.get("/dashboard/organizations", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
            statuses.append(answer.status_code)
    return statuses


def test_serve_gives_every_worker_one_secret_that_a_reload_keeps_and_a_restart_replaces(
    serve: Callable[[str], _Serve],
) -> None:
    first = serve("first")
    workers = first.wait_ready()
    assert _secret_of(first.process.pid) is None  # made by the supervisor, not given to it
    secret = _secret_of(workers[0])
    assert secret is not None and len(parse_session_secret(secret)) == 32
    assert [_secret_of(pid) for pid in workers] == [secret, secret]
    cookie = _signed_in_cookie(first.url)
    assert _pages(first.url, cookie, 12) == [200] * 12

    # SIGHUP replaces both workers: the new ones have the same secret and accept the session
    mark = len(first.log.read_text())
    first.process.send_signal(signal.SIGHUP)
    _wait_for(first.log, "config reloaded", mark)
    reloaded = first.wait_ready()
    assert not set(reloaded) & set(workers)
    assert [_secret_of(pid) for pid in reloaded] == [secret, secret]
    assert _pages(first.url, cookie, 12) == [200] * 12
    first.stop()
    output = first.log.read_text(errors="replace")
    assert secret not in output and secret.upper() not in output

    # a new `billfold serve` makes a new secret: everyone signs in again
    second = serve("second")
    renewed = {_secret_of(pid) for pid in second.wait_ready()}
    assert len(renewed) == 1 and None not in renewed and secret not in renewed
    assert _pages(second.url, cookie, 3) == [302] * 3
    assert _pages(second.url, _signed_in_cookie(second.url), 3) == [200] * 3
