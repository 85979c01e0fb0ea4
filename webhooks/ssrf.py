"""SSRF guard for outbound webhook URLs: refuse endpoints that point into our own or a private network.

check_url vets a URL when it is registered; guarded_connector re-checks every address aiohttp connects to.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

if TYPE_CHECKING:
    from aiohttp.tracing import Trace

__all__ = [
    "MAX_URL_LENGTH",
    "BlockedAddress",
    "GuardedResolver",
    "UnsafeURL",
    "check_address",
    "check_url",
    "guarded_connector",
    "parse_url",
]

MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_RFC1918 = tuple(ipaddress.IPv4Network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


class UnsafeURL(Exception):
    """A webhook URL we refuse to deliver to; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BlockedAddress(OSError):
    """Raised inside aiohttp's connector when every address of a host is refused."""

    def __init__(self, reason: str) -> None:
        # Two-argument form so .strerror is set: ClientConnectorError prints strerror, not args.
        super().__init__(errno.EACCES, f"blocked: {reason}")
        self.reason = reason


def _kind(ip: IPAddress) -> str | None:
    """Name the class of a non-public address, or None for a public unicast one."""
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address):
        if ip == _BROADCAST:
            return "the broadcast address"
        if any(ip in net for net in _RFC1918):
            return "a private address"
        if ip in _SHARED:
            return "a shared (carrier-grade NAT) address"
    else:
        if ip in _UNIQUE_LOCAL:
            return "a private (unique-local) address"
        if ip.is_site_local:
            return "a site-local address"
    if ip.is_reserved:
        return "a reserved address"
    # Catches what the specific tests above do not name: documentation, benchmarking, 192.0.0.0/24...
    if not ip.is_global:
        return "a non-global address"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """Return the IPv4 addresses an IPv6 address carries, each with the name of the embedding."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return [("an IPv4-mapped address", ip.ipv4_mapped)]
    if ip in _NAT64_WELL_KNOWN:
        return [("a NAT64 address", low32)]
    if ip in _NAT64_LOCAL_USE:
        # The operator picks the prefix length; /96 (IPv4 in the last 32 bits) is what DNS64 setups use.
        return [("a local-use NAT64 address", low32)]
    if ip.sixtofour is not None:
        return [("a 6to4 address", ip.sixtofour)]
    if ip.teredo is not None:
        server, client = ip.teredo
        return [("a Teredo address", server), ("a Teredo address", client)]
    if int(ip) >> 32 == 0 and int(ip) > 1:
        return [("an IPv4-compatible address", low32)]
    return []


def check_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Return None if ``ip`` is a public unicast address we may connect to, else the reason it is refused."""
    if isinstance(ip, ipaddress.IPv6Address):
        for label, inner in _embedded_ipv4(ip):
            inner_reason = check_address(inner)
            if inner_reason is not None:
                return f"{label} ({ip}) embedding {inner_reason}"
        # Packets to these go to the embedded IPv4 address, which passed; Python calls the IPv6
        # wrappers reserved (they sit in ::/8), which says nothing about where the traffic lands.
        if ip.ipv4_mapped is not None or ip in _NAT64_WELL_KNOWN:
            return None
        # IANA lists 64:ff9b:1::/48 as not globally reachable, although Python's is_global says it is.
        if ip in _NAT64_LOCAL_USE:
            return f"a local-use NAT64 address ({ip}), which is not globally reachable"
    kind = _kind(ip)
    return None if kind is None else f"{kind} ({ip})"


def _check_host_address(address: str) -> str | None:
    """check_address for an address string as resolvers and sockets report it."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"an unrecognised address ({address!r})"
    return check_address(ip)


def _literal_ip(host: str) -> IPAddress | None:
    """Parse ``host`` as an IP literal in any spelling the C library accepts, or return None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # inet_aton is the libc parser behind getaddrinfo's numeric hosts: 2130706433, 0177.0.0.1, 0x7f.1, 127.1.
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def _describe(host: str, reason: str) -> str:
    """Phrase a refusal for ``host``: a canonical literal *is* the address, a name *resolves to* it."""
    return f"the host is {reason}" if _is_ip_literal(host) else f"the host resolves to {reason}"


# Labels of 1-63 letters, digits, hyphens (not at either end) or underscores (common in internal
# names), up to 253 characters in all, an optional final dot. IDNA names arrive as punycode.
_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.?",
    re.IGNORECASE | re.ASCII,  # without ASCII, [a-z] would also match the Kelvin sign and long s
)


def _is_ip_literal(host: str) -> bool:
    """True if ``host`` is an IP address in canonical notation (not one of libc's looser spellings)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_url(url: str) -> tuple[str, str, int]:
    """Validate the shape of an endpoint URL and return (scheme, ASCII host, port); raise UnsafeURL if bad."""
    if not isinstance(url, str):
        raise UnsafeURL("the URL must be a string")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"the URL is longer than {MAX_URL_LENGTH} characters")
    # Parsers disagree on what stray whitespace and control characters mean; refuse rather than guess.
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UnsafeURL("the URL contains whitespace or control characters")
    # yarl is what aiohttp parses the URL with when sending, so the host we check is the host it uses.
    try:
        parsed = URL(url)
    except ValueError as exc:  # also UnicodeError from IDNA encoding
        raise UnsafeURL(f"the URL is malformed ({exc})") from exc
    scheme = parsed.scheme
    if scheme not in ("http", "https"):
        raise UnsafeURL(
            f"the scheme must be http or https, not {scheme!r}" if scheme else "the URL has no scheme"
        )
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise UnsafeURL("the URL must not contain credentials (user:password@)")
    host = parsed.raw_host
    if not host:
        raise UnsafeURL("the URL has no host")
    if not _is_ip_literal(host) and not _HOSTNAME.fullmatch(host):
        raise UnsafeURL(f"the host {host[:80]!r} is not a valid hostname")
    explicit = parsed.explicit_port
    if explicit is not None and not 1 <= explicit <= 65535:
        raise UnsafeURL(f"the port must be between 1 and 65535, not {explicit}")
    port = parsed.port
    if port is None:  # pragma: no cover - http and https always have a default port
        raise UnsafeURL("the URL has no port")
    return scheme, host, port


async def check_url(url: str, *, allow_private: bool = False, resolve: bool = True) -> None:
    """Raise UnsafeURL unless ``url`` is a well-formed http(s) URL whose host only reaches public addresses.

    With ``resolve=False`` only what needs no DNS is checked (IP literals in any spelling, localhost names);
    other names are then left to GuardedResolver at delivery time.
    """
    _, host, port = parse_url(url)
    if allow_private:
        return
    if not resolve:
        name = host.rstrip(".").lower()
        if name == "localhost" or name.endswith(".localhost"):
            raise UnsafeURL("the host is a localhost name")
        literal = _literal_ip(host)
        if literal is not None and (reason := check_address(literal)) is not None:
            raise UnsafeURL(_describe(host, reason))
        return
    # Resolve instead of parsing literals: getaddrinfo understands every IPv4 spelling the connect will.
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeURL("the host does not resolve") from exc
    if not infos:
        raise UnsafeURL("the host does not resolve")
    # Any bad address refuses the URL: which one a later connect picks is not ours to choose.
    for *_, sockaddr in infos:
        reason = _check_host_address(str(sockaddr[0]))
        if reason is not None:
            raise UnsafeURL(_describe(host, reason))


def _keep_public(host: str, results: list[ResolveResult]) -> list[ResolveResult]:
    """Drop refused addresses; raise BlockedAddress if that leaves none."""
    kept: list[ResolveResult] = []
    first_reason: str | None = None
    for result in results:
        reason = _check_host_address(result["host"])
        if reason is None:
            kept.append(result)
        elif first_reason is None:
            first_reason = reason
    if first_reason is not None and not kept:
        raise BlockedAddress(_describe(host, first_reason))
    return kept


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that drops every resolved address check_address refuses."""

    def __init__(self, resolver: AbstractResolver | None = None, *, allow_private: bool = False) -> None:
        # Created lazily: aiohttp's resolvers bind to the running loop, which may not exist yet.
        self._resolver = resolver
        self._owns_resolver = resolver is None
        self.allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` with the wrapped resolver and keep only the addresses we may connect to."""
        if self._resolver is None:
            self._resolver = DefaultResolver()
        results = await self._resolver.resolve(host, port, family)
        if self.allow_private:
            return results
        # aiohttp connects to exactly these addresses, so a DNS answer that changes between a check
        # and the connect (rebinding) cannot slip a private address past us.
        return _keep_public(host, results)

    async def close(self) -> None:
        """Close the wrapped resolver if this instance created it."""
        if self._resolver is not None and self._owns_resolver:
            await self._resolver.close()


def _guarded_socket_factory(inner: aiohttp.SocketFactoryType | None) -> aiohttp.SocketFactoryType:
    """Wrap a socket factory so it refuses to create sockets for refused addresses."""

    def factory(addr_info: aiohttp.AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        reason = _check_host_address(str(sockaddr[0]))
        if reason is not None:
            raise BlockedAddress(f"the connection target is {reason}")
        if inner is not None:
            return inner(addr_info)
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


class _GuardedConnector(aiohttp.TCPConnector):
    """TCPConnector that also refuses IP-literal hosts, which aiohttp never passes to the resolver."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: AbstractResolver | None = None,
        socket_factory: aiohttp.SocketFactoryType | None = None,
        **kwargs: Any,
    ) -> None:
        self._ssrf_allow_private = allow_private
        self._ssrf_resolver = GuardedResolver(resolver, allow_private=allow_private)
        if not allow_private:
            # Last line of defence: sees the exact sockaddr being connected, whatever path led there.
            socket_factory = _guarded_socket_factory(socket_factory)
        super().__init__(resolver=self._ssrf_resolver, socket_factory=socket_factory, **kwargs)

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Trace] | None = None
    ) -> list[ResolveResult]:
        if not self._ssrf_allow_private:
            # Checked before aiohttp's own handling so odd spellings (2130706433) fail with our reason.
            literal = _literal_ip(host)
            if literal is not None and (reason := check_address(literal)) is not None:
                raise BlockedAddress(_describe(host, reason))
        return await super()._resolve_host(host, port, traces=traces)

    async def close(self, *, abort_ssl: bool = False) -> None:
        """Close the connector and the guarded resolver it made."""
        try:
            await super().close(abort_ssl=abort_ssl)
        finally:
            await self._ssrf_resolver.close()


def guarded_connector(*, allow_private: bool, limit: int = 100, **kwargs: Any) -> aiohttp.TCPConnector:
    """Return a TCPConnector that refuses, at connect time, every address check_address refuses.

    ``kwargs`` go to TCPConnector; a ``resolver`` or ``socket_factory`` given there is wrapped, not replaced.
    """
    return _GuardedConnector(allow_private=allow_private, limit=limit, **kwargs)
