"""SSRF guard: URL checks, address classification, and refusal at connect time against a loopback server.

No test resolves or connects to a public host: public addresses are only classified, never contacted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

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
