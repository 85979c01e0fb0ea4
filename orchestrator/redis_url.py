"""``ORCH_REDIS_URL``, parsed in one place: one Redis, or a primary found through Sentinel.

Forms (``[user:password@]`` optional, ``%``-escaped; the password is the data nodes')::

    redis://[user:password@]host[:6379][/db]             one Redis (or a managed one's DNS name)
    rediss://...                                         the same over TLS
    unix://[user:password@]/path/to/redis.sock[?db=N]
    redis+sentinel://[user:password@]h1[:26379],h2,h3/service[/db][?sentinel_password=...]
    rediss+sentinel://...                                TLS to the Sentinels and to the data nodes

Query options: ``db``; ``sentinel_username`` and ``sentinel_password`` (Sentinel forms: the
Sentinels' own credentials, when they have ``requirepass``); and for TLS ``ssl_ca_certs``,
``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs`` (none|optional|required) and
``ssl_check_hostname`` (true|false). Anything else is refused with one line that names it.
Errors and :func:`mask` never show a password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote

DIRECT = ("redis", "rediss", "unix")
SENTINEL = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379
REDIS_PORT = 6379
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
CERT_REQS = ("none", "optional", "required")
_SECRET_OPTIONS = ("sentinel_password",)
_HOST = re.compile(r"^[A-Za-z0-9._-]+$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+$")
_NAME = re.compile(r"^[a-z_]{1,40}$")


class RedisURLError(ValueError):
    """``ORCH_REDIS_URL`` cannot be used; the message is one line and never shows a password."""


@dataclass(frozen=True)
class RedisTarget:
    """Where the Redis is: one address (or a unix socket), or a Sentinel service."""

    scheme: str
    hosts: tuple[tuple[str, int], ...] = ()  # the one server, or the Sentinels
    path: str | None = None  # unix socket
    service: str | None = None  # the Sentinel service (master) name
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    tls: dict[str, Any] = field(default_factory=dict)  # ssl_* options, when the scheme is TLS

    @property
    def sentinel(self) -> bool:
        """Whether the primary is found through Sentinel."""
        return self.scheme in SENTINEL

    @property
    def uses_tls(self) -> bool:
        """TLS to every node (the Sentinels too)."""
        return self.scheme in ("rediss", "rediss+sentinel")

    def node_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments for a data node's connections (not host, port or class)."""
        out: dict[str, Any] = {"db": self.db, "username": self.username, "password": self.password}
        out.update(self.tls)
        return out

    def sentinel_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments for the connections to the Sentinels themselves."""
        out: dict[str, Any] = {"username": self.sentinel_username, "password": self.sentinel_password}
        if self.uses_tls:
            out["ssl"] = True
            out.update(self.tls)
        return out


def _fail(message: str) -> RedisURLError:
    return RedisURLError(f"ORCH_REDIS_URL {message}")


def _split_userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    if "@" not in netloc:
        return None, None, netloc
    userinfo, _, rest = netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if sep else None), rest


def _address(text: str, default_port: int) -> tuple[str, int]:
    # Never echo text that is not a host name: it may be a piece of an unescaped password.
    host, port_text = text, ""
    if text.startswith("["):  # [ipv6]:port
        end = text.find("]")
        if end < 0:
            raise _fail("has an unclosed '[' in a host")
        host, port_text = text[1:end], text[end + 1 :].removeprefix(":")
        if not _IPV6.match(host):
            raise _fail("has a bad IPv6 address in brackets")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise _fail("names an empty host")
    if not text.startswith("[") and not _HOST.match(host):
        raise _fail("has a host with characters no host name has (is a password not %-escaped?)")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _fail(f"has a bad port for host {host!r} (a number 1-65535)")  # the text may be a password
    return host, int(port_text)


def _db(text: str) -> int:
    if not text.isdigit():
        raise _fail(f"has a bad database number {text!r} (a number like 0)")
    return int(text)


def _options(query: str, scheme: str) -> dict[str, str]:
    allowed = {
        "db",
        *(TLS_OPTIONS if "rediss" in scheme else ()),
        *(SENTINEL_OPTIONS if "+" in scheme else ()),
    }
    out: dict[str, str] = {}
    for name, values in parse_qs(query, keep_blank_values=True).items():
        if name not in allowed:
            what = repr(name) if _NAME.match(name) else "(not shown)"
            raise _fail(
                f"has an unknown option {what} for {scheme}:// (allowed: {', '.join(sorted(allowed))})"
            )
        out[name] = values[-1]
    return out


def _tls(options: dict[str, str]) -> dict[str, Any]:
    tls: dict[str, Any] = {
        k: options[k] for k in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile") if k in options
    }
    if "ssl_cert_reqs" in options:
        if options["ssl_cert_reqs"] not in CERT_REQS:
            raise _fail(f"has a bad ssl_cert_reqs (one of {', '.join(CERT_REQS)})")
        tls["ssl_cert_reqs"] = options["ssl_cert_reqs"]
    if "ssl_check_hostname" in options:
        value = options["ssl_check_hostname"].lower()
        if value not in ("true", "false"):
            raise _fail("has ssl_check_hostname that is neither true nor false")
        tls["ssl_check_hostname"] = value == "true"
    return tls


def parse(url: str) -> RedisTarget:
    """Parse ``ORCH_REDIS_URL``; raise RedisURLError (one line, no password) if it cannot be used."""
    scheme, sep, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in (*DIRECT, *SENTINEL):
        raise _fail(f"must start with one of {', '.join(s + '://' for s in (*DIRECT, *SENTINEL))}")
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    options = _options(query, scheme)
    netloc, _, path = rest.partition("/")
    user, password, netloc = _split_userinfo(netloc)
    tls = _tls(options) if "rediss" in scheme else {}
    common: dict[str, Any] = {"scheme": scheme, "username": user, "password": password, "tls": tls}
    if scheme == "unix":
        if netloc or not path:
            raise _fail("of the unix:// form must be unix://[user:password@]/path/to/socket[?db=N]")
        return RedisTarget(path="/" + unquote(path), db=_db(options.get("db", "0")), **common)
    if not netloc:
        raise _fail(f"names no host (e.g. {scheme}://127.0.0.1)")
    if scheme in DIRECT:
        if "," in netloc:
            raise _fail(f"names several hosts: for Sentinel use {scheme}+sentinel://h1,h2,h3/service")
        db = options.get("db") or path.strip("/") or "0"
        return RedisTarget(hosts=(_address(netloc, REDIS_PORT),), db=_db(db), **common)
    sentinels = tuple(_address(part, SENTINEL_PORT) for part in netloc.split(","))
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise _fail(f"must name the Sentinel service: {scheme}://h1:26379,h2:26379/mymaster[/db]")
    db = options.get("db") or (parts[1] if len(parts) == 2 else "0")
    return RedisTarget(
        hosts=sentinels,
        service=parts[0],
        db=_db(db),
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
        **common,
    )


def mask(url: str) -> str:
    """`url` with every password replaced by ``***`` (safe to print or log)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, qmark, query = rest.partition("?")
    head, at, tail = rest.rpartition("@")
    if at:
        user, colon, _ = head.partition(":")
        rest = f"{user}{':***' if colon else ''}@{tail}"
    if qmark:
        pairs = []
        for pair in query.split("&"):
            name, eq, _ = pair.partition("=")
            pairs.append(f"{name}=***" if eq and unquote(name) in _SECRET_OPTIONS else pair)
        query = "&".join(pairs)
    return f"{scheme}://{rest}{qmark}{query}"


def sentinel_url(
    sentinels: list[tuple[str, int]],
    service: str,
    *,
    db: int = 0,
    password: str | None = None,
    tls: bool = False,
) -> str:
    """Build a Sentinel form of ``ORCH_REDIS_URL`` (for tests, the bench and docs)."""
    auth = f":{quote(password, safe='')}@" if password else ""
    hosts = ",".join(f"{h}:{p}" for h, p in sentinels)
    return f"{'rediss' if tls else 'redis'}+sentinel://{auth}{hosts}/{quote(service, safe='')}/{db}"
