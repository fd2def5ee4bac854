"""Which state directory a CLI command acts on (tulle.local.registry), without sockets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tulle.local import registry
from tulle.local.state import StateDir


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TULLE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TULLE_STATE_DIR", raising=False)
    return tmp_path / "home"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Path]:
    """A state directory whose lock is held, as a live supervisor holds it."""
    state = StateDir(tmp_path / "mesh" / ".tulle")
    fd = state.acquire()
    try:
        yield state.root.resolve()
    finally:
        state.release(fd)


def test_home_is_tulle_home_else_xdg_state_home() -> None:
    assert registry.tulle_home({"TULLE_HOME": "/a"}) == Path("/a")
    assert registry.tulle_home({"XDG_STATE_HOME": "/x"}) == Path("/x/tulle")
    assert registry.tulle_home({}) == Path.home() / ".local" / "state" / "tulle"


def test_the_registered_running_mesh_is_found_from_anywhere(
    home: Path, running: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert registry.find_state_dir(start=elsewhere) is None
    registry.register(running)
    assert (home / "current").read_text().strip() == str(running)
    assert registry.find_state_dir(start=elsewhere) == running
    # Named explicitly, or by the environment: that one, whatever is registered.
    assert registry.find_state_dir("other", start=elsewhere) == Path("other").resolve()
    os.environ["TULLE_STATE_DIR"] = str(elsewhere)
    try:
        assert registry.find_state_dir(start=elsewhere) == elsewhere.resolve()
    finally:
        del os.environ["TULLE_STATE_DIR"]


def test_a_running_mesh_here_wins_over_the_registered_one(
    home: Path, running: Path, tmp_path: Path
) -> None:
    registry.register(tmp_path / "somewhere-else")
    assert registry.find_state_dir(start=running.parent / "sub" / "dir") == running


def test_a_stale_registration_is_ignored_and_removed(home: Path, tmp_path: Path) -> None:
    dead = StateDir(tmp_path / "dead" / ".tulle")
    dead.create()
    dead.lock_file.touch()  # the supervisor died: nobody holds the flock
    registry.register(dead.root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert registry.find_state_dir(start=elsewhere) is None
    assert registry.registered() is None


def test_unregister_leaves_another_meshes_registration(home: Path, tmp_path: Path) -> None:
    registry.register(tmp_path / "second")
    registry.unregister(tmp_path / "first")
    assert registry.registered() == (tmp_path / "second").resolve()
    registry.unregister(tmp_path / "second")
    assert registry.registered() is None


def test_a_stopped_mesh_here_is_named_when_nothing_runs(home: Path, tmp_path: Path) -> None:
    stopped = StateDir(tmp_path / "proj" / ".tulle")
    stopped.create()
    stopped.state_file.write_text("{}")
    assert registry.find_state_dir(start=tmp_path / "proj") == stopped.root.resolve()
