"""PendingLimit: a hard cap with no queue."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tulle.core.concurrency import PendingLimit


def test_refuses_over_the_cap_and_frees_on_release() -> None:
    limit = PendingLimit(2)
    assert limit.try_acquire()
    assert limit.try_acquire()
    assert not limit.try_acquire()
    assert limit.rejected == 1
    limit.release()
    assert limit.try_acquire()
    assert limit.pending == 2


def test_unmatched_release_does_not_make_extra_room() -> None:
    limit = PendingLimit(1)
    limit.release()
    assert limit.pending == 0
    assert limit.try_acquire()
    assert not limit.try_acquire()


def test_rejects_a_cap_below_one() -> None:
    with pytest.raises(ValueError):
        PendingLimit(0)


@given(st.integers(min_value=1, max_value=5), st.lists(st.booleans(), max_size=100))
def test_pending_stays_within_zero_and_the_cap(cap: int, ops: list[bool]) -> None:
    limit = PendingLimit(cap)
    for acquire in ops:
        if acquire:
            limit.try_acquire()
        else:
            limit.release()
        assert 0 <= limit.pending <= cap
