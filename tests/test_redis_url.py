"""ORCH_REDIS_URL: every form parsed into what redis-py needs; a bad one is one line without secrets."""

from __future__ import annotations

import pytest

from orchestrator.redis_url import RedisURLError, mask, parse, sentinel_url


def test_one_redis_with_password_and_database() -> None:
    t = parse("redis://app:p%40ss@redis.internal:6380/2")
    assert (t.sentinel, t.hosts, t.db, t.username, t.password) == (
        False,
        (("redis.internal", 6380),),
        2,
        "app",
        "p@ss",
    )
    assert parse("redis://127.0.0.1").hosts == (("127.0.0.1", 6379),) and parse("redis://h").db == 0
    assert parse("redis://h/?db=3").db == 3 and parse("redis://[::1]:7000").hosts == (("::1", 7000),)


def test_tls_options_reach_the_nodes() -> None:
    t = parse("rediss://:pw@h:6380/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required&ssl_check_hostname=true")
    assert t.uses_tls and t.node_kwargs() == {
        "db": 0,
        "username": None,
        "password": "pw",
        "ssl_ca_certs": "/ca.pem",
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }


def test_a_unix_socket() -> None:
    t = parse("unix:///run/redis/redis.sock?db=1")
    assert (t.path, t.db, t.hosts) == ("/run/redis/redis.sock", 1, ())


def test_sentinel_form_with_both_passwords() -> None:
    t = parse("redis+sentinel://:node%2Fpw@s1:26379,s2,[::1]:26380/my-primary/4?sentinel_password=s%26pw")
    assert t.sentinel and not t.uses_tls
    assert t.hosts == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert (t.service, t.db, t.password, t.sentinel_password) == ("my-primary", 4, "node/pw", "s&pw")
    assert t.sentinel_kwargs() == {"username": None, "password": "s&pw"}
    assert parse("redis+sentinel://s1/orch").db == 0


def test_tls_sentinel_form_talks_tls_to_the_sentinels_too() -> None:
    t = parse("rediss+sentinel://s1:26379/orch?ssl_ca_certs=/ca.pem")
    assert (
        t.uses_tls and t.sentinel_kwargs()["ssl"] is True and t.sentinel_kwargs()["ssl_ca_certs"] == "/ca.pem"
    )
    assert t.node_kwargs()["ssl_ca_certs"] == "/ca.pem"


def test_the_sentinel_url_builder_round_trips() -> None:
    url = sentinel_url([("127.0.0.1", 1), ("127.0.0.1", 2)], "orch", db=1, password="a b@c")
    t = parse(url)
    assert (t.hosts, t.service, t.db, t.password) == (
        (("127.0.0.1", 1), ("127.0.0.1", 2)),
        "orch",
        1,
        "a b@c",
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h:6379", "must start with one of"),
        ("127.0.0.1:6379", "must start with one of"),
        ("redis://", "names no host"),
        ("redis://h:0/0", "bad port"),
        ("redis://h:99999", "bad port"),
        ("redis://h:abc", "bad port"),
        ("redis://h/x", "bad database number"),
        ("redis://h1,h2/0", "for Sentinel use redis+sentinel://"),
        ("redis://h/0?socket_timeout=1", "unknown option 'socket_timeout'"),
        ("redis://h/0?ssl_ca_certs=/x", "unknown option 'ssl_ca_certs'"),  # TLS options need rediss
        ("rediss://h/0?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
        ("redis+sentinel://s1,s2", "must name the Sentinel service"),
        ("redis+sentinel://s1/orch/0/extra", "must name the Sentinel service"),
        ("redis+sentinel://s1,,s2/orch", "empty host"),
        ("redis+sentinel://s1/orch?password=x", "unknown option 'password'"),
        ("unix://h/sock", "unix://[user:password@]/path"),
    ],
)
def test_a_bad_url_is_one_line_naming_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(RedisURLError) as bad:
        parse(url)
    assert says in str(bad.value) and "\n" not in str(bad.value)
    assert str(bad.value).startswith("ORCH_REDIS_URL ")


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@bad host/0",  # a space: not a host
        "redis://:hunter2@h:port/0",
        "redis+sentinel://:hunter2@s1:1,s2:x/orch",
        "redis://:hun?ter2@h/0",  # an unescaped '?' in the password: the rest reads as an option
        "redis+sentinel://s1/orch?sentinel_password=hunter2&oops=1",
        "redis://app:hunter2",  # no host: the password reads as a port
        "rediss://:hunter2@h/0?ssl_cert_reqs=hunter2",
    ],
)
def test_an_error_never_shows_a_password(url: str) -> None:
    with pytest.raises(RedisURLError) as bad:
        parse(url)
    assert "hunter2" not in str(bad.value) and "ter2" not in str(bad.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://app:hunter2@h/0", "redis://app:***@h/0"),
        ("redis://app@h/0", "redis://app@h/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        (
            "rediss+sentinel://:hunter2@s1,s2/orch/0?sentinel_password=hunter2&ssl_cert_reqs=none",
            "rediss+sentinel://:***@s1,s2/orch/0?sentinel_password=***&ssl_cert_reqs=none",
        ),
        ("unix://:hunter2@/run/redis.sock", "unix://:***@/run/redis.sock"),
    ],
)
def test_mask_hides_every_password(url: str, masked: str) -> None:
    assert mask(url) == masked
