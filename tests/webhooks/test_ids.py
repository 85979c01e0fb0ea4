"""Prefixed, time-ordered ids: shape, order within a millisecond, floors, validation, decoding."""

from __future__ import annotations

from itertools import pairwise

import pytest

from webhooks import ids
from webhooks.ids import decode_ms, id_floor, is_valid, new_id

T = 1_764_374_400_000  # 2025-11-29, in ms


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if this process had made no id yet (the suite's own ids are newer than T); restored after.
    monkeypatch.setattr(ids, "_last", [0, 0])


def test_shape() -> None:
    value = new_id("msg")
    assert value.startswith("msg_") and len(value) == len("msg_") + 26
    assert is_valid(value, "msg")
    assert len(new_id("ep")) == len("ep_") + 26


def test_strictly_increasing_within_one_millisecond() -> None:
    made = [new_id("msg", now_ms=T) for _ in range(1000)]
    assert all(a < b for a, b in pairwise(made))
    assert {decode_ms(v) for v in made} == {T}


def test_a_later_millisecond_sorts_after() -> None:
    first, second = new_id("msg", now_ms=T), new_id("msg", now_ms=T + 1)
    assert first < second and decode_ms(second) == T + 1


def test_the_floor_of_a_millisecond() -> None:
    older = new_id("msg", now_ms=T - 1)
    same = [new_id("msg", now_ms=T) for _ in range(50)]
    floor = id_floor("msg", T)
    assert older < floor and all(floor <= v for v in same)
    assert floor < id_floor("msg", T + 1)
    assert is_valid(floor, "msg") and decode_ms(floor) == T


def test_is_valid_refuses_what_new_id_does_not_make() -> None:
    value = new_id("msg")
    body = value[len("msg_") :]
    assert is_valid(value, "msg")
    for bad in (
        value[:-1],  # too short
        value + "0",  # too long
        "ep_" + body,  # another prefix
        "msg" + body + "0",  # no separator
        "msg_" + body.lower(),  # not Crockford's upper case
        "msg_" + body[:-1] + "U",  # not in the alphabet (U, like I, L and O, is left out)
        "msg_",
        "",
    ):
        assert not is_valid(bad, "msg"), bad
    assert not is_valid(value, "ms")


@pytest.mark.parametrize("ms", [0, 1, T, 2**48 - 1])
def test_decode_ms_round_trip(ms: int) -> None:
    assert decode_ms(new_id("x", now_ms=ms)) == ms
    assert decode_ms(id_floor("x", ms)) == ms
