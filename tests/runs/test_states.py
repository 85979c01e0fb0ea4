from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.errors import InvalidTransition
from orchestrator.models import Execution, ExecutionError, ExecutionStatus
from orchestrator.runs.states import ALLOWED, advance, can_advance

S = ExecutionStatus
T0 = datetime(2026, 11, 28, 23, 43, 1, 123000, tzinfo=UTC)


def make(status: S = S.queued) -> Execution:
    return Execution(id="exec_x", flow_id="f", status=status, created_at=T0, trace_id="t", sequence=1)


LEGAL = {
    (S.queued, S.running),
    (S.queued, S.cancelled),
    (S.running, S.running),
    (S.running, S.success),
    (S.running, S.failed),
    (S.running, S.cancelled),
}


@pytest.mark.parametrize("current", list(S))
@pytest.mark.parametrize("target", list(S))
def test_table_matches_the_design(current: S, target: S) -> None:
    assert can_advance(current, target) == ((current, target) in LEGAL)


def test_terminal_states_allow_nothing() -> None:
    for status in (S.success, S.failed, S.cancelled):
        assert status.terminal
        assert ALLOWED[status] == frozenset()
        with pytest.raises(InvalidTransition) as info:
            advance(make(status), S.running, now=T0)
        assert info.value.details["status"] == status.value


def test_advance_sets_times_duration_and_sequence() -> None:
    run = advance(make(), S.running, now=T0)
    assert run.started_at == T0 and run.sequence == 2 and run.completed_at is None
    done = advance(run, S.success, now=T0 + timedelta(milliseconds=1500), output={"a": 1})
    assert done.completed_at == T0 + timedelta(milliseconds=1500)
    assert done.duration == 1500 and done.output == {"a": 1} and done.sequence == 3


def test_retry_keeps_started_at_and_bumps_attempt() -> None:
    run = advance(make(), S.running, now=T0)
    retried = advance(run, S.running, now=T0 + timedelta(seconds=5), attempt=2)
    assert retried.started_at == T0 and retried.attempt == 2 and retried.sequence == 3


def test_cancel_from_queued_has_no_duration() -> None:
    done = advance(make(), S.cancelled, now=T0)
    assert done.duration is None and done.completed_at == T0


def test_failed_carries_error() -> None:
    run = advance(make(), S.running, now=T0)
    err = ExecutionError(code="x", message="y")
    done = advance(run, S.failed, now=T0, error=err)
    assert done.error == err


def test_timestamps_render_with_milliseconds_and_z() -> None:
    doc = make().model_dump(mode="json", by_alias=True)
    assert doc["createdAt"] == "2026-11-28T23:43:01.123Z"
    assert set(doc) == {
        "id",
        "flowId",
        "status",
        "createdAt",
        "startedAt",
        "completedAt",
        "duration",
        "output",
        "metrics",
        "traceId",
        "metadata",
        "error",
        "attempt",
        "sequence",
    }
    # API.md's metrics, plus lastStep (the name the flow gave its last step; an addition)
    assert set(doc["metrics"]) == {"tokensUsed", "cost", "stepsRun", "stepsTotal", "lastStep"}
