"""The crash-loop rule of `tulle up`'s supervisor (tulle.local.crashloop)."""

from __future__ import annotations

from tulle.local.crashloop import CrashLoop, CrashLoopSpec, describe_exit


def test_limit_failures_within_the_window_give_up() -> None:
    loop = CrashLoop(CrashLoopSpec(limit=3, window_s=10.0))
    assert not loop.failed(0.0)
    assert not loop.failed(1.0)
    assert loop.gave_up == ""
    assert loop.failed(2.0)
    assert "failed 3 times within 10s" in loop.gave_up


def test_failures_spread_wider_than_the_window_never_give_up() -> None:
    loop = CrashLoop(CrashLoopSpec(limit=3, window_s=10.0))
    for minute in range(100):
        assert not loop.failed(minute * 6.0)
    assert loop.gave_up == ""
    assert len(loop.failures) == 2


def test_a_command_that_cannot_start_is_given_up_at_once() -> None:
    loop = CrashLoop(CrashLoopSpec(limit=5, window_s=60.0))
    loop.cannot_start(0.0, "cannot start `nope`: No such file or directory")
    assert loop.gave_up.startswith("cannot start `nope`")


def test_exit_statuses_say_what_they_mean() -> None:
    assert describe_exit(127) == "exited with code 127 (command not found)"
    assert describe_exit(126) == "exited with code 126 (command not executable)"
    assert describe_exit(-9) == "was killed by signal 9"
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(None) == "could not be started"
