from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.settings import DEFAULT_RETRY_SCHEDULE, ConfigurationError, Settings


def test_defaults_match_the_contract() -> None:
    s = Settings.from_env({})
    assert s.webhook_timeout == 15.0 and s.webhook_retry_schedule == DEFAULT_RETRY_SCHEDULE
    assert s.max_body_bytes == 10 * 1024 * 1024 and s.webhook_allow_private is False and s.api_keys == ()


def test_reads_only_orch_variables_from_the_given_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_MAX_BODY_BYTES", "5")
    s = Settings.from_env(
        {
            "ORCH_API_KEYS": "a:k1, b:k2",
            "ORCH_FLOWS": "x.y,z",
            "MAX_BODY_BYTES": "7",
            "ORCH_WEBHOOK_RETRY_SCHEDULE": "1,2.5",
            "ORCH_WEBHOOK_ALLOW_PRIVATE": "true",
        }
    )
    assert s.api_keys == (("a", "k1"), ("b", "k2")) and s.flows == ("x.y", "z")
    assert s.webhook_retry_schedule == (1.0, 2.5) and s.webhook_allow_private is True
    assert s.max_body_bytes == 10 * 1024 * 1024  # the process environment was not consulted


def test_round_trips_through_the_environment() -> None:
    s = Settings.from_env({"ORCH_API_KEYS": "a:k", "ORCH_FLOWS": "m", "ORCH_LEASE_SECONDS": "3"})
    assert Settings.from_env(s.to_env()) == s


def test_probe_schedule_reaches_the_dispatcher() -> None:
    s = Settings.from_env({"ORCH_WEBHOOK_PROBE_SCHEDULE": "0.5,2"})
    assert s.dispatcher.probe_schedule == (0.5, 2.0)
    assert Settings.from_env({}).dispatcher.probe_schedule[0] == 300.0


@pytest.mark.parametrize(
    "env",
    [
        {"ORCH_API_KEYS": "nocolon"},
        {"ORCH_WEBHOOK_RETRY_SCHEDULE": "1,-1"},
        {"ORCH_WEBHOOK_PROBE_SCHEDULE": "0"},
        {"ORCH_WEBHOOK_PROBE_SCHEDULE": "inf"},  # regression: stopped every fan-out (int(inf))
        {"ORCH_WEBHOOK_PROBE_SCHEDULE": "nan"},
        {"ORCH_WEBHOOK_RETRY_SCHEDULE": "1,nan"},
        {"ORCH_WEBHOOK_RETRY_SCHEDULE": "1e999"},
        {"ORCH_WEBHOOK_PROBE_SCHEDULE": ""},
        {"ORCH_MAX_BODY_BYTES": "0"},
        {"ORCH_WEBHOOK_TIMEOUT": "x"},
        {"ORCH_WEBHOOK_CA_BUNDLE": "/nonexistent/ca.pem"},
        {"ORCH_WEBHOOK_CA_BUNDLE": "/"},  # a directory, not a file
    ],
)
def test_bad_values_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(env)
    [name] = env
    message = str(refused.value)
    assert message.startswith(name) and "\n" not in message and "input" not in message


def test_the_ca_bundle_reaches_the_dispatcher_and_child_processes(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("pem")
    s = Settings.from_env({"ORCH_WEBHOOK_CA_BUNDLE": str(bundle)})
    assert s.dispatcher.ca_bundle == str(bundle)
    assert Settings.from_env(s.to_env()).webhook_ca_bundle == str(bundle)
    unset = Settings.from_env({})
    assert unset.dispatcher.ca_bundle is None and "ORCH_WEBHOOK_CA_BUNDLE" not in unset.to_env()
    assert Settings.from_env(unset.to_env()) == unset


def test_failing_after_reaches_the_dispatcher() -> None:
    assert Settings.from_env({}).dispatcher.failing_after == 4
    assert Settings.from_env({"ORCH_WEBHOOK_FAILING_AFTER": "2"}).dispatcher.failing_after == 2
    with pytest.raises(ConfigurationError, match="ORCH_WEBHOOK_FAILING_AFTER"):
        Settings.from_env({"ORCH_WEBHOOK_FAILING_AFTER": "0"})


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(ValidationError):
        s.redis_url = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "env",
    [
        {"ORCH_API_KEYS": "acme:sk_live_hunter2,broken"},
        {"ORCH_REDIS_URL": "redis://:hunter2@bad host:6379/0"},
        {"ORCH_REDIS_URL": "redis+sentinel://:hunter2@h1:26379,h2:99999/mymaster"},
        {"ORCH_REDIS_URL": "redis+sentinel://h1/mymaster?sentinel_password=hunter2&bogus=1"},
    ],
)
def test_a_refused_value_is_never_shown(env: dict[str, str]) -> None:
    # regression: pydantic's message carried input_value=..., so a bad ORCH_API_KEYS or a Redis URL
    # with a typo printed its secrets on stderr at start
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(env)
    assert "hunter2" not in str(refused.value)


def test_replication_reaches_the_stores_and_the_dispatcher() -> None:
    s = Settings.from_env(
        {"ORCH_REDIS_MIN_REPLICAS_ACK": "1", "ORCH_REDIS_REPLICAS_ACK_TIMEOUT_SECONDS": "0.25"}
    )
    assert (s.replication.replicas, s.replication.timeout_ms) == (1, 250)
    assert s.dispatcher.replication == s.replication
    assert not Settings.from_env({}).replication.enabled  # the default adds nothing to any write


def test_settings_load_no_redis_client() -> None:
    # regression: settings imported webhooks.replication, which loaded redis-py into every command
    # (the CLI's client commands talk HTTP only, and start slower for it)
    import subprocess
    import sys

    from tests.conftest import ROOT

    probe = "import sys\nimport orchestrator.settings\nprint('redis' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
