"""Where an endpoint may point, checked when it is saved and again on every connection.

Production: ``https`` only, and every address the name resolves to must be a public unicast
address (not loopback, private, link-local — which holds the cloud metadata address
169.254.169.254 —, shared, reserved or multicast), unless it lies in ``allowed_networks``.
Development also allows ``http`` and the loopback addresses (``http://127.0.0.1``, localhost).

The check at delivery is on the address actually connected to. httpx resolves a name again when it
connects, so a check made before the request could pass for one answer and the connection go to
another (DNS rebinding). Instead the client's connection pool gets an httpcore network backend
(httpcore's documented extension point) that resolves the name itself, refuses it when any answer
is not allowed, and opens the TCP connection to the checked IP. httpcore still sends the URL's host
in the Host header and as the TLS server name (SNI), and verifies the certificate against it, so
nothing else changes. httpx 0.28 has no constructor argument for the backend: the transport's pool
is replaced by one built the same way with the backend (see :func:`make_client`). The client never
follows redirects and ignores proxy variables (a proxy would connect on its own terms).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from billfold import Unprocessable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]


class DestinationRefused(httpcore.ConnectError):
    """A connection to an address the policy refuses (raised before any byte is sent)."""


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


resolver: Resolver = system_resolve
"""The resolver used at creation and at connection time (tests put a stub here)."""


RESOLVE_SECONDS = 5.0


async def resolve(host: str, port: int) -> list[str]:
    async with asyncio.timeout(RESOLVE_SECONDS):
        return await resolver(host, port)


class Policy:
    """What a deployment allows: built from the environment and ``allowed_networks``."""

    def __init__(self, *, production: bool, networks: Iterable[Network] = ()) -> None:
        self.production = production
        self.networks = list(networks)

    def scheme_allowed(self, scheme: str) -> bool:
        return scheme == "https" or (scheme == "http" and not self.production)

    def address_allowed(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.networks):
            return True
        if address.is_loopback:
            return not self.production
        return address.is_global and not address.is_multicast and not address.is_reserved

    def host_name_allowed(self, host: str) -> bool:
        name = host.rstrip(".").lower()
        if name == "localhost" or name.endswith(".localhost"):
            return not self.production
        return True


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def allowed_addresses(policy: Policy, host: str, port: int) -> list[str]:
    """The addresses to connect to for ``host``, or DestinationRefused when any is not allowed."""
    if not policy.host_name_allowed(host):
        raise DestinationRefused(f"destination_not_allowed: {host} is not allowed")
    literal = _literal(host)
    addresses = [str(literal)] if literal is not None else await resolve(host, port)
    if not addresses:
        raise httpcore.ConnectError(f"{host} did not resolve")
    refused = [a for a in addresses if not policy.address_allowed(ipaddress.ip_address(a.split("%")[0]))]
    if refused:
        raise DestinationRefused(f"destination_not_allowed: {host} resolves to {', '.join(refused)}")
    return addresses


async def check_url(policy: Policy, url: str, field: str = "url") -> None:
    """At creation: 422 with ``insecure_url``, ``destination_not_allowed`` or
    ``destination_unresolvable`` when the endpoint could never be delivered to."""
    try:
        parsed = urllib.parse.urlsplit(url)
        host = parsed.hostname
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        raise Unprocessable(
            "the url is not a valid URL (host, port)", code="invalid_url", field=field
        ) from None
    if not policy.scheme_allowed(parsed.scheme):
        raise Unprocessable(
            "endpoints must use https" + (" (http is allowed in development)" if policy.production else ""),
            code="insecure_url",
            field=field,
            fix="Serve the receiver over https.",
        )
    if not host:
        raise Unprocessable("the url names no host", code="invalid_url", field=field)
    if parsed.username or parsed.password:
        raise Unprocessable("the url must not carry credentials", code="invalid_url", field=field)
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        raise Unprocessable(
            "the url's port is not a number from 0 to 65535", code="invalid_url", field=field
        ) from None
    try:
        await allowed_addresses(policy, host, port)
    except DestinationRefused as refused:
        raise Unprocessable(
            f"{host} is not an allowed destination: loopback, private, link-local, multicast and "
            "metadata addresses are refused",
            code="destination_not_allowed",
            field=field,
            fix="Point the endpoint at a public address.",
        ) from refused
    except (httpcore.ConnectError, OSError, UnicodeError, TimeoutError):
        raise Unprocessable(
            f"{host} does not resolve",
            code="destination_unresolvable",
            field=field,
            fix="Check the host name.",
        ) from None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's default backend, connecting only to checked addresses (see the module doc)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await allowed_addresses(self.policy, host, port)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("destination_not_allowed: unix sockets are not destinations")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def make_client(
    policy: Policy, *, timeout: float, max_connections: int, ca_bundle: str | None = None
) -> httpx.AsyncClient:
    """One client per worker process: pooled keep-alive connections to every receiver."""
    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else httpx.create_ssl_context()
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    transport = httpx.AsyncHTTPTransport(verify=context, limits=limits, trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(policy),
    )
    return httpx.AsyncClient(
        transport=transport, timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False
    )


def refused(exc: BaseException) -> DestinationRefused | None:
    """The policy's refusal behind an httpx error, if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DestinationRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
