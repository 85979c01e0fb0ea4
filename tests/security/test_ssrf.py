"""SSRF guard, from the address classifier to the running system.

Unit level: URL checks, address classification, refusal at connect time against a loopback server.
End to end, for every entry of MATRIX (the list from the SSRF issue):
- at creation: an API served with ``webhook_allow_private=False`` answers 422 ``validation_error`` to
  ``POST /v1/webhooks``, to a run's own ``webhook.url`` and to ``PATCH /v1/webhooks/{id}``, and stores
  nothing;
- at delivery: an endpoint registered while private addresses were allowed is refused by a dispatcher
  that does not allow them; the attempts are recorded as failed with a readable reason and no
  connection reaches the listener bound to the loopback addresses of the URL.
Plus DNS rebinding (public at creation, loopback at delivery) and redirects to loopback.

Names are resolved by a stand-in DNS (FakeDNS): the event loop's ``getaddrinfo``, which both
``check_url`` and aiohttp's resolver call, answers for made-up ``.example.test`` names and passes
every other name to the real one. No test resolves or connects to a public host: public addresses are
only classified, never contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis
from yarl import URL

from orchestrator.flows import Registry
from tests.conftest import ServedApp, make_settings, serve, tenant_client, wait_for
from tests.receiver import Receiver
from tests.security.redis_state import changes, snapshot
from tests.webhooks.helpers import FAST, running_dispatcher
from webhooks.ssrf import (
    MAX_URL_LENGTH,
    BlockedAddress,
    GuardedResolver,
    UnsafeURL,
    _guarded_socket_factory,
    check_address,
    check_url,
    guarded_connector,
    parse_url,
)


@dataclass
class Recorder:
    """A loopback HTTP server that counts the requests it receives."""

    server: TestServer
    paths: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        port = self.server.port
        assert port is not None
        return port


async def _start(handler_status: int = 200, location: str | None = None) -> Recorder:
    recorder: Recorder

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        recorder.paths.append(request.path)
        headers = {"Location": location} if location else None
        return web.Response(status=handler_status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    recorder = Recorder(TestServer(app, host="127.0.0.1"))
    await recorder.server.start_server()
    return recorder


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = await _start()
    yield rec
    await rec.server.close()


class FakeResolver(AbstractResolver):
    """Answers every name with fixed addresses, standing in for a DNS server an attacker controls."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        pass


# --- check_url refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.1/",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
        "http://[2002:7f00::1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f000001/",
        "http://localhost/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://[fc00::1]/",
    ],
)
async def test_check_url_refuses_non_public_hosts(url: str) -> None:
    with pytest.raises(UnsafeURL) as info:
        await check_url(url)
    assert info.value.reason
    assert str(info.value) == info.value.reason


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1/", "the host is a loopback address (127.0.0.1)"),
        ("http://2130706433/", "the host resolves to a loopback address (127.0.0.1)"),
        ("http://localhost/", "the host resolves to a loopback address (127.0.0.1)"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://[64:ff9b::7f00:1]/", "NAT64 address (64:ff9b::7f00:1) embedding a loopback address"),
        ("http://[2002:7f00::1]/", "6to4"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped"),
    ],
)
async def test_refusal_reasons_are_readable(url: str, words: str) -> None:
    with pytest.raises(UnsafeURL, match=r"^the host ") as info:
        await check_url(url)
    assert words in info.value.reason


async def test_hostname_resolving_to_loopback_is_refused() -> None:
    # localhost comes from /etc/hosts: a name, not a literal, so this exercises the resolution path.
    with pytest.raises(UnsafeURL, match=r"resolves to a loopback address"):
        await check_url("http://localhost:8080/hook")


async def test_unresolvable_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    async def no_such_host(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(loop, "getaddrinfo", no_such_host)
    with pytest.raises(UnsafeURL, match=r"^the host does not resolve$"):
        await check_url("http://hooks.example.test/")


async def test_any_bad_address_among_several_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    async def mixed(*args: Any, **kwargs: Any) -> Any:
        stream = socket.SOCK_STREAM
        return [
            (socket.AF_INET, stream, 6, "", ("8.8.8.8", 443)),
            (socket.AF_INET, stream, 6, "", ("10.1.2.3", 443)),
        ]

    monkeypatch.setattr(loop, "getaddrinfo", mixed)
    with pytest.raises(UnsafeURL, match=r"private address \(10\.1\.2\.3\)"):
        await check_url("https://hooks.example.test/")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/", "http://2130706433/", "http://0x7f.1/", "http://[::1]/", "http://app.localhost/"],
)
async def test_check_url_without_resolving_still_catches_literals(url: str) -> None:
    with pytest.raises(UnsafeURL):
        await check_url(url, resolve=False)


async def test_check_url_without_resolving_leaves_names_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    async def must_not_resolve(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("resolve=False must not touch DNS")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", must_not_resolve)
    await check_url("https://hooks.example.test/x", resolve=False)


async def test_allow_private_accepts_loopback() -> None:
    await check_url("http://127.0.0.1:8080/x", allow_private=True)
    await check_url("http://localhost:8080/x", allow_private=True)


async def test_allow_private_keeps_parse_checks() -> None:
    with pytest.raises(UnsafeURL, match="scheme"):
        await check_url("ftp://127.0.0.1/", allow_private=True)
    with pytest.raises(UnsafeURL, match="not a valid hostname"):
        await check_url("http://a..b/", allow_private=True)


# --- parse_url ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com", "scheme must be http or https"),
        ("javascript:alert(1)", "scheme must be http or https"),
        ("example.com/hook", "no scheme"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://user@example.com/", "credentials"),
        ("http:///nohost", "no host"),
        ("http://example.com/" + "a" * MAX_URL_LENGTH, "longer than 2048"),
        ("http://example.com:0/", "port must be between 1 and 65535"),
        ("http://example.com:70000/", "malformed"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com/\r\nX-Injected: 1", "control characters"),
        ("http://[::1/", "malformed"),
        # not hostnames at all (regression: accepted whenever private hosts were allowed)
        ("http://a..b/", "not a valid hostname"),
        ("http://-a.example/", "not a valid hostname"),
        ("http://a-.example/", "not a valid hostname"),
        ("http://" + "a" * 64 + ".example/", "not a valid hostname"),
        ("http://a!b.example/", "not a valid hostname"),
    ],
)
def test_parse_url_refusals(url: str, words: str) -> None:
    with pytest.raises(UnsafeURL) as info:
        parse_url(url)
    assert words in info.value.reason


def test_parse_url_refuses_non_strings() -> None:
    with pytest.raises(UnsafeURL, match="must be a string"):
        parse_url(b"http://example.com/")  # type: ignore[arg-type]


def test_parse_url_returns_scheme_host_port() -> None:
    assert parse_url("https://Hooks.Example.com/x?y=1") == ("https", "hooks.example.com", 443)
    assert parse_url("http://example.com:8080") == ("http", "example.com", 8080)
    assert parse_url("http://[2606:4700::1111]:81/") == ("http", "2606:4700::1111", 81)
    assert parse_url("https://bücher.example/") == ("https", "xn--bcher-kva.example", 443)
    assert parse_url("http://my_service:8000/")[1] == "my_service"  # e.g. a compose service name
    assert parse_url("http://example.com./")[1] == "example.com."
    assert parse_url("http://2130706433/")[1] == "2130706433"  # shape only: check_url refuses it
    assert parse_url("http://example.com/" + "a" * (MAX_URL_LENGTH - 19))[1] == "example.com"


# --- check_address -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8", "2002:808:808::1"],
)
def test_check_address_accepts_public_addresses(address: str) -> None:
    assert check_address(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "non-global"),
        ("198.51.100.7", "non-global"),
        ("203.0.113.9", "non-global"),
        ("198.18.0.1", "non-global"),
        ("2001:db8::1", "non-global"),
        ("fec0::1", "site-local"),
        ("::ffff:10.0.0.1", "IPv4-mapped address (::ffff:a00:1) embedding a private address (10.0.0.1)"),
        ("::ffff:169.254.169.254", "embedding a link-local address (169.254.169.254)"),
        ("64:ff9b::a9fe:a9fe", "NAT64 address (64:ff9b::a9fe:a9fe) embedding a link-local address"),
        ("64:ff9b::a00:1", "embedding a private address (10.0.0.1)"),
        ("64:ff9b:1::a00:1", "local-use NAT64 address (64:ff9b:1::a00:1) embedding a private address"),
        ("64:ff9b:1::808:808", "not globally reachable"),
        ("2002:a00:1::1", "6to4 address (2002:a00:1::1) embedding a private address (10.0.0.1)"),
        ("2002:c0a8:101::1", "embedding a private address (192.168.1.1)"),
        # Teredo: server 65.54.227.120, client 127.0.0.1 stored bit-inverted (0x80fffffe).
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo address"),
        ("::127.0.0.1", "IPv4-compatible address (::7f00:1) embedding a loopback address"),
        ("::8.8.8.8", "reserved"),
    ],
)
def test_check_address_refusals(address: str, words: str) -> None:
    reason = check_address(ipaddress.ip_address(address))
    assert reason is not None
    assert words in reason


def test_teredo_client_is_checked() -> None:
    reason = check_address(ipaddress.ip_address("2001:0:4136:e378:8000:63bf:80ff:fffe"))
    assert reason is not None
    assert "loopback address (127.0.0.1)" in reason


# --- GuardedResolver ---------------------------------------------------------------------------


async def test_guarded_resolver_drops_refused_addresses() -> None:
    resolver = GuardedResolver(FakeResolver("10.0.0.7", "8.8.8.8", "::1"))
    results = await resolver.resolve("hooks.example.test", 443)
    assert [r["host"] for r in results] == ["8.8.8.8"]
    await resolver.close()


async def test_guarded_resolver_raises_when_nothing_is_left() -> None:
    resolver = GuardedResolver(FakeResolver("127.0.0.1", "169.254.169.254"))
    with pytest.raises(BlockedAddress) as info:
        await resolver.resolve("hooks.example.test", 443)
    assert info.value.reason == "the host resolves to a loopback address (127.0.0.1)"
    assert info.value.strerror == "blocked: the host resolves to a loopback address (127.0.0.1)"
    await resolver.close()


async def test_guarded_resolver_allow_private_passes_everything() -> None:
    resolver = GuardedResolver(FakeResolver("127.0.0.1"), allow_private=True)
    assert [r["host"] for r in await resolver.resolve("hooks.example.test", 443)] == ["127.0.0.1"]
    await resolver.close()


async def test_guarded_resolver_default_resolver_sees_localhost() -> None:
    resolver = GuardedResolver()
    with pytest.raises(BlockedAddress, match="loopback"):
        await resolver.resolve("localhost", 80)
    await resolver.close()


def test_socket_factory_backstop() -> None:
    factory = _guarded_socket_factory(None)
    stream = socket.SOCK_STREAM
    with pytest.raises(BlockedAddress, match="connection target is a loopback address"):
        factory((socket.AF_INET, stream, 6, "", ("127.0.0.1", 80)))
    with pytest.raises(BlockedAddress, match="private"):
        factory((socket.AF_INET6, stream, 6, "", ("fd00::2", 80, 0, 0)))
    # Creating a socket is not a connection: nothing is sent anywhere.
    sock = factory((socket.AF_INET, stream, 6, "", ("8.8.8.8", 80)))
    sock.close()


async def test_socket_factory_backstop_inside_aiohttp(recorder: Recorder) -> None:
    # A plain TCPConnector skips the resolver for literals; the factory alone must still refuse.
    connector = aiohttp.TCPConnector(socket_factory=_guarded_socket_factory(None))
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError, match="the connection target is a loopback"):
            async with session.post(f"http://127.0.0.1:{recorder.port}/", data=b"x"):
                pass
    assert recorder.paths == []


# --- at delivery: a real server on 127.0.0.1 ---------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "[::1]", "2130706433", "0x7f000001", "127.1", "[::ffff:127.0.0.1]"],
)
async def test_guarded_connector_refuses_loopback_at_connect(recorder: Recorder, host: str) -> None:
    url = f"http://{host}:{recorder.port}/hook"
    async with aiohttp.ClientSession(connector=guarded_connector(allow_private=False)) as session:
        with pytest.raises(aiohttp.ClientError) as info:
            async with session.post(url, json={"event": "x"}, allow_redirects=False):
                pass
    assert isinstance(info.value, aiohttp.ClientConnectorError)
    assert isinstance(info.value.os_error, BlockedAddress)
    assert "blocked: the host " in str(info.value)
    assert "loopback address" in str(info.value)
    assert recorder.paths == []


async def test_guarded_connector_refuses_private_dns_answer(recorder: Recorder) -> None:
    # An attacker's DNS answering with 127.0.0.1: the address checked is the address connected to.
    connector = guarded_connector(allow_private=False, resolver=FakeResolver("127.0.0.1"))
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError, match=r"resolves to a loopback address \(127\."):
            async with session.post(f"http://rebind.example.test:{recorder.port}/", data=b"x"):
                pass
    assert recorder.paths == []


async def test_guarded_connector_allow_private_delivers(recorder: Recorder) -> None:
    async with aiohttp.ClientSession(connector=guarded_connector(allow_private=True)) as session:
        for host in ("127.0.0.1", "localhost"):
            async with session.post(f"http://{host}:{recorder.port}/hook", data=b"x") as response:
                assert response.status == 200
        connector = guarded_connector(allow_private=True, resolver=FakeResolver("127.0.0.1"))
        async with (
            aiohttp.ClientSession(connector=connector) as faked,
            faked.post(f"http://rebind.example.test:{recorder.port}/dns", data=b"x") as response,
        ):
            assert response.status == 200
    assert recorder.paths == ["/hook", "/hook", "/dns"]


async def test_redirect_to_loopback_is_not_followed(recorder: Recorder) -> None:
    redirector = await _start(302, location=f"http://127.0.0.1:{recorder.port}/internal")
    url = f"http://127.0.0.1:{redirector.port}/"
    try:
        async with (
            aiohttp.ClientSession(connector=guarded_connector(allow_private=True)) as session,
            session.post(url, data=b"x", allow_redirects=False) as response,
        ):
            assert response.status == 302
            assert response.headers["Location"].endswith("/internal")
    finally:
        await redirector.server.close()
    assert redirector.paths == ["/"]
    assert recorder.paths == []


# --- the matrix of the SSRF issue, from check_url to the running system -------------------------

LOOPBACK_HOSTS = ("127.0.0.1", "127.5.6.7", "::1")
# Made-up names answered by FakeDNS (the resolver an attacker controls).
DNS_ANSWERS = {"loopback.example.test": "127.0.0.1"}
PUBLIC_URL = "https://93.184.215.14/hook"  # accepted, never contacted: no dispatcher sees it


@dataclass(frozen=True)
class Case:
    """One entry of the matrix: a URL (``{port}`` is the loopback listener's) and the words of its refusal."""

    id: str
    template: str
    reason: str
    # Whether a connection to the URL would land on the listener (LOOPBACK_HOSTS) if it were let through.
    reaches_listener: bool = True

    def url(self, port: int) -> str:
        """The URL with the listener's port."""
        return self.template.format(port=port)


MATRIX = [
    Case("loopback", "http://127.0.0.1:{port}/hook", "a loopback address (127.0.0.1)"),
    Case("loopback-net", "http://127.5.6.7:{port}/hook", "a loopback address (127.5.6.7)"),
    Case("ipv6-loopback", "http://[::1]:{port}/hook", "a loopback address (::1)"),
    Case("rfc1918-10", "http://10.0.0.1:{port}/hook", "a private address (10.0.0.1)", False),
    Case("rfc1918-172", "http://172.16.0.1:{port}/hook", "a private address (172.16.0.1)", False),
    Case("rfc1918-192", "http://192.168.1.1:{port}/hook", "a private address (192.168.1.1)", False),
    Case(
        "cloud-metadata",
        "http://169.254.169.254/latest/meta-data/",
        "a link-local address (169.254.169.254)",
        False,
    ),
    Case("cgnat", "http://100.64.0.1:{port}/hook", "(carrier-grade NAT) address (100.64.0.1)", False),
    Case("unspecified", "http://0.0.0.0:{port}/hook", "an unspecified address (0.0.0.0)"),
    Case(
        "ipv4-mapped",
        "http://[::ffff:127.0.0.1]:{port}/hook",
        "IPv4-mapped address (::ffff:7f00:1) embedding a loopback address (127.0.0.1)",
    ),
    Case(
        "6to4",
        "http://[2002:7f00::1]:{port}/hook",
        "6to4 address (2002:7f00::1) embedding a loopback address (127.0.0.0)",
        False,
    ),
    Case(
        "nat64",
        "http://[64:ff9b::7f00:1]:{port}/hook",
        "NAT64 address (64:ff9b::7f00:1) embedding a loopback address (127.0.0.1)",
        False,
    ),
    Case("decimal", "http://2130706433:{port}/hook", "resolves to a loopback address (127.0.0.1)"),
    Case("octal", "http://0177.0.0.1:{port}/hook", "resolves to a loopback address (127.0.0.1)"),
    Case("localhost", "http://localhost:{port}/hook", "resolves to a loopback address (127.0.0.1)"),
    Case(
        "dns-name", "http://loopback.example.test:{port}/hook", "resolves to a loopback address (127.0.0.1)"
    ),
]
CASE_IDS = [c.id for c in MATRIX]


@dataclass
class FakeDNS:
    """A DNS server under the test's control, answering through the running loop's getaddrinfo.

    ``check_url`` (at creation) and aiohttp's default resolver (at delivery) both call
    ``loop.getaddrinfo``; names in ``answers`` get the address given there, every other name goes
    to the real resolver. ``asked`` lists the names answered, to prove the stand-in was consulted.
    """

    real: Callable[..., Any]
    answers: dict[str, str] = field(default_factory=lambda: dict(DNS_ANSWERS))
    asked: list[str] = field(default_factory=list)

    async def getaddrinfo(
        self, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        address = self.answers.get(name.rstrip(".").lower())
        if address is None:
            return await self.real(host, port, family=family, type=type, proto=proto, flags=flags)
        self.asked.append(name)
        kind = socket.AF_INET6 if ":" in address else socket.AF_INET
        if family not in (socket.AF_UNSPEC, kind):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        number = int(port or 0)
        sockaddr = (address, number, 0, 0) if kind == socket.AF_INET6 else (address, number)
        return [(kind, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]


@pytest.fixture
async def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    loop = asyncio.get_running_loop()
    dns = FakeDNS(loop.getaddrinfo)
    monkeypatch.setattr(loop, "getaddrinfo", dns.getaddrinfo)
    return dns


@dataclass
class Listener:
    """Plain TCP listeners on every address of LOOPBACK_HOSTS, all on one port; each connection is noted."""

    port: int
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(str(writer.get_extra_info("sockname")[0]))
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    await asyncio.wait_for(reader.readexactly(int(value)), 5)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
        writer.close()

    async def close(self) -> None:
        """Stop listening."""
        for server in self.servers:
            server.close()
            await server.wait_closed()


async def start_listener() -> Listener:
    """Bind one free port on every loopback address of LOOPBACK_HOSTS."""
    for _ in range(50):
        sockets: list[socket.socket] = []
        try:
            for host in LOOPBACK_HOSTS:
                port = sockets[0].getsockname()[1] if sockets else 0
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sockets.append(sock)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((host, port))
        except OSError:  # that port is taken on another loopback address: try another
            for sock in sockets:
                sock.close()
            continue
        listener = Listener(port=sockets[0].getsockname()[1])
        for sock in sockets:
            listener.servers.append(await asyncio.start_server(listener._accept, sock=sock))
        return listener
    raise RuntimeError("no port is free on every loopback address")


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    found = await start_listener()
    yield found
    await found.close()


@pytest.fixture(scope="module")
async def strict_api(redis_url: str, registry: Registry) -> AsyncIterator[ServedApp]:
    """An API that refuses private addresses: the production default (the suite's own API allows them)."""
    async with serve(make_settings(redis_url, webhook_allow_private=False), registry) as served:
        yield served


@pytest.fixture
async def strict(strict_api: ServedApp, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with tenant_client(strict_api.url) as c:
        yield c


# Two attempts per delivery (the first and one retry), so a refusal is final within a moment.
STRICT = replace(FAST, allow_private=False, retry_schedule=(0.01,))
PERMISSIVE = replace(FAST, allow_private=True, retry_schedule=(0.01,))


async def failed_deliveries(client: httpx.AsyncClient, endpoint_id: str) -> list[dict[str, Any]]:
    """The endpoint's deliveries once every one of them has failed for good, else []."""
    page = (await client.get(f"/v1/webhooks/{endpoint_id}/deliveries")).json()["data"]
    return page if page and all(d["status"] == "failed" for d in page) else []


async def failed_run_webhook(client: httpx.AsyncClient, run_id: str) -> dict[str, Any] | None:
    """The run's own webhook's ``execution.queued`` delivery (from the run's report) once failed."""
    report = (await client.get(f"/v1/runs/{run_id}/deliveries")).json()
    [hook] = [target for target in report["data"] if target.get("runWebhook")]
    [queued] = [e for e in hook["events"] if e["eventType"] == "execution.queued"]
    return queued if queued["status"] == "failed" else None


def assert_refused(attempts: list[dict[str, Any]], reason: str) -> None:
    """Every attempt failed before any HTTP exchange, saying which address was refused and why."""
    assert len(attempts) == 1 + len(STRICT.retry_schedule)
    for attempt in attempts:
        assert attempt["statusCode"] is None
        assert "blocked: the host " in attempt["error"], attempt["error"]
        assert reason in attempt["error"], attempt["error"]


@pytest.mark.parametrize("case", MATRIX, ids=CASE_IDS)
async def test_matrix_refused_by_check_url(case: Case, fake_dns: FakeDNS) -> None:
    with pytest.raises(UnsafeURL) as info:
        await check_url(case.url(8080))
    assert case.reason in info.value.reason
    assert info.value.reason.startswith("the host ")


@pytest.mark.parametrize("case", MATRIX, ids=CASE_IDS)
async def test_matrix_refused_by_guarded_connector(case: Case, fake_dns: FakeDNS, listener: Listener) -> None:
    async with aiohttp.ClientSession(connector=guarded_connector(allow_private=False)) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            async with session.post(case.url(listener.port), data=b"x", allow_redirects=False):
                pass
    assert isinstance(info.value.os_error, BlockedAddress)
    assert case.reason in str(info.value)
    assert listener.connections == []


async def test_the_listener_would_see_every_loopback_case(fake_dns: FakeDNS, listener: Listener) -> None:
    """Control: the OS maps each loopback spelling onto the listener, so its silence means a refusal."""
    reaching = [c for c in MATRIX if c.reaches_listener]
    for case in reaching:
        url = URL(case.url(listener.port))
        assert url.raw_host is not None
        reader, writer = await asyncio.open_connection(url.raw_host, url.port)
        writer.write(b"POST /hook HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nx")
        assert (await reader.read()).startswith(b"HTTP/1.1 200 OK"), case.id
        writer.close()
        await writer.wait_closed()
    assert len(listener.connections) == len(reaching)
    assert set(listener.connections) == {"127.0.0.1", "127.5.6.7", "::1"}
    assert "loopback.example.test" in fake_dns.asked


async def test_strict_api_accepts_public_endpoints(strict: httpx.AsyncClient, fake_dns: FakeDNS) -> None:
    """Control: the refusals below are about the address, not a blanket refusal of every URL."""
    fake_dns.answers["hooks.public.example.test"] = "93.184.215.14"
    for url in (PUBLIC_URL, "https://hooks.public.example.test/in"):
        created = await strict.post("/v1/webhooks", json={"url": url})
        assert created.status_code == 201, created.text
    body = {"input": {"text": "x"}, "webhook": {"url": "https://hooks.public.example.test/run"}}
    assert (await strict.post("/v1/flows/echo/runs", json=body)).status_code == 202
    assert fake_dns.asked == ["hooks.public.example.test"] * 2


@pytest.mark.parametrize("case", MATRIX, ids=CASE_IDS)
async def test_refused_at_creation_and_nothing_stored(
    case: Case, strict: httpx.AsyncClient, redis: Redis, fake_dns: FakeDNS, listener: Listener
) -> None:
    url = case.url(listener.port)
    endpoint = (await strict.post("/v1/webhooks", json={"url": PUBLIC_URL})).json()
    before = await snapshot(redis)
    answers = [
        ("url", await strict.post("/v1/webhooks", json={"url": url})),
        (
            "webhook.url",
            await strict.post("/v1/flows/echo/runs", json={"input": {"text": "x"}, "webhook": {"url": url}}),
        ),
        ("url", await strict.patch(f"/v1/webhooks/{endpoint['id']}", json={"url": url})),
    ]
    for name, resp in answers:
        assert resp.status_code == 422, (name, resp.text)
        error = resp.json()["error"]
        assert error["code"] == "validation_error"
        [bad] = error["details"]["fields"]
        assert bad["field"] == name
        assert case.reason in bad["message"] and case.reason in error["message"]
    assert changes(before, await snapshot(redis)) == []
    assert (await strict.get(f"/v1/webhooks/{endpoint['id']}")).json()["url"] == PUBLIC_URL
    assert listener.connections == []


@pytest.mark.parametrize("case", MATRIX, ids=CASE_IDS)
async def test_refused_at_delivery(
    case: Case, client: httpx.AsyncClient, redis: Redis, fake_dns: FakeDNS, listener: Listener
) -> None:
    # Registered through an API that allowed private addresses (the dev default), then delivered by a
    # dispatcher that does not: the guard at connect time must hold on its own.
    url = case.url(listener.port)
    created = await client.post("/v1/webhooks", json={"url": url, "events": ["execution.failed"]})
    assert created.status_code == 201
    endpoint_id = created.json()["id"]
    run_body = {"input": {"text": "x"}, "webhook": {"url": url, "events": ["execution.queued"]}}
    async with running_dispatcher(redis, STRICT):
        assert (await client.post(f"/v1/webhooks/{endpoint_id}/test")).status_code == 202
        run = (await client.post("/v1/flows/echo/runs", json=run_body)).json()
        [delivery] = await wait_for(lambda: failed_deliveries(client, endpoint_id))
        hook = await wait_for(lambda: failed_run_webhook(client, run["id"]))
    assert delivery["eventType"] == "webhook.test"
    assert_refused(delivery["attempts"], case.reason)
    assert_refused(hook["attempts"], case.reason)
    assert listener.connections == []


async def test_dns_rebinding_public_at_creation_loopback_at_delivery(
    strict: httpx.AsyncClient, redis: Redis, fake_dns: FakeDNS, listener: Listener
) -> None:
    name = "rebind.example.test"
    url = f"http://{name}:{listener.port}/hook"
    fake_dns.answers[name] = "93.184.215.14"  # what the name says while the API checks it
    created = await strict.post("/v1/webhooks", json={"url": url, "events": ["execution.failed"]})
    assert created.status_code == 201, created.text
    endpoint_id = created.json()["id"]
    run_body = {"input": {"text": "x"}, "webhook": {"url": url, "events": ["execution.queued"]}}
    run = (await strict.post("/v1/flows/echo/runs", json=run_body)).json()
    assert fake_dns.asked == [name, name]  # both URLs were checked against the public answer
    fake_dns.answers[name] = "127.0.0.1"  # ... and what it says once the dispatcher connects
    async with running_dispatcher(redis, STRICT):
        message_id = (await strict.post(f"/v1/webhooks/{endpoint_id}/test")).json()["messageId"]
        [delivery] = await wait_for(lambda: failed_deliveries(strict, endpoint_id))
        hook = await wait_for(lambda: failed_run_webhook(strict, run["id"]))
    reason = "blocked: the host resolves to a loopback address (127.0.0.1)"
    assert_refused(delivery["attempts"], reason)
    assert_refused(hook["attempts"], reason)
    assert listener.connections == []
    # Control: a dispatcher allowing private addresses reaches the listener through the same answer,
    # so the refusal came from the guard, not from a lookup that failed.
    async with running_dispatcher(redis, PERMISSIVE):
        retried = await strict.post(f"/v1/webhooks/{endpoint_id}/deliveries/{message_id}/retry")
        assert retried.status_code == 202
        await wait_for(lambda: listener.connections == ["127.0.0.1"])


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_to_loopback_is_not_followed_end_to_end(
    status: int, client: httpx.AsyncClient, redis: Redis, fake_dns: FakeDNS, listener: Listener
) -> None:
    # A public-looking name, served on loopback; the dispatcher allows private addresses so that it can
    # reach it at all, which leaves the no-redirect rule as the only thing between it and the listener.
    target = f"http://127.0.0.1:{listener.port}/internal"
    redirector = await Receiver(default=(status, {"Location": target})).start()
    try:
        port = redirector.url.split(":")[2].split("/")[0]
        fake_dns.answers["hooks.partner.example.test"] = "127.0.0.1"
        url = f"http://hooks.partner.example.test:{port}/hook"
        created = await client.post("/v1/webhooks", json={"url": url, "events": ["execution.failed"]})
        endpoint = created.json()
        async with running_dispatcher(redis, PERMISSIVE):
            assert (await client.post(f"/v1/webhooks/{endpoint['id']}/test")).status_code == 202
            [delivery] = await wait_for(lambda: failed_deliveries(client, endpoint["id"]))
    finally:
        await redirector.stop()
    assert len(delivery["attempts"]) == 1 + len(PERMISSIVE.retry_schedule) == len(redirector.requests)
    for attempt in delivery["attempts"]:
        assert attempt["statusCode"] == status
        assert attempt["error"] == f"redirect to {target} not followed"
    assert listener.connections == []
