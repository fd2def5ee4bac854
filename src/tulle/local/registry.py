"""Which local mesh the CLI talks to when none is named: the current mesh.

`tulle up` registers its state directory as the *current* mesh, as kubectl
has a current context, so that `tulle check`, `stat`, `tap`, `dashboard`,
`down` ... find it from any directory; a clean stop unregisters it. The
registration is one file, `current`, holding the state directory's absolute
path, in the Tulle home: `$TULLE_HOME`, else `$XDG_STATE_HOME/tulle`, else
`~/.local/state/tulle` (tests point `TULLE_HOME` at a temporary directory, so
they never touch a user's registration).

`find_state_dir` is the one place that decides which state directory a
command uses (the control plane's address, the API token, the mesh to stop
all come from it). The first that applies:

1. `--state-dir` / `TULLE_STATE_DIR`, as given;
2. the `.tulle/` of this directory or the nearest parent whose mesh is
   running (its supervisor holds the lock);
3. the registered current mesh, if it is running; a registration whose
   supervisor is gone (lock not held: the kernel drops it however the
   supervisor died) is stale, and is removed when found;
4. the nearest `.tulle/` that holds a `state.json` or an `api-token`, running
   or not (so that messages name it);

else none.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tulle.local.state import API_TOKEN_FILE, DEFAULT_STATE_DIR, STATE_FILE, StateDir

CURRENT_FILE = "current"


def tulle_home(environ: dict[str, str] | None = None) -> Path:
    """Where the current-mesh registration lives."""
    env = os.environ if environ is None else environ
    if env.get("TULLE_HOME"):
        return Path(env["TULLE_HOME"])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tulle"


def _current_file() -> Path:
    return tulle_home() / CURRENT_FILE


def registered() -> Path | None:
    """The registered state directory, running or not."""
    try:
        text = _current_file().read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


def register(state_dir: Path) -> None:
    """Make this state directory the current mesh (write-then-rename)."""
    current = _current_file()
    current.parent.mkdir(parents=True, exist_ok=True)
    temporary = current.with_name(f".{CURRENT_FILE}.{os.getpid()}.tmp")
    temporary.write_text(f"{state_dir.resolve()}\n")
    temporary.replace(current)


def unregister(state_dir: Path) -> None:
    """Forget the current mesh if it is this one (another `tulle up` may have taken over)."""
    if registered() == state_dir.resolve():
        with contextlib.suppress(OSError):
            _current_file().unlink()


def is_running(state_dir: Path) -> bool:
    """Whether a supervisor holds this state directory's lock."""
    try:
        return StateDir(state_dir).is_locked()
    except OSError:
        return False


def _local_dirs(start: Path | None) -> list[Path]:
    here = (start or Path.cwd()).resolve()
    return [directory / DEFAULT_STATE_DIR for directory in (here, *here.parents)]


def find_state_dir(explicit: str = "", start: Path | None = None) -> Path | None:
    """The state directory a command acts on (module docstring: the order)."""
    if explicit:
        return Path(explicit).resolve()
    named = os.environ.get("TULLE_STATE_DIR", "")
    if named:
        return Path(named).resolve()
    local = [d for d in _local_dirs(start) if d.is_dir()]
    for candidate in local:
        if is_running(candidate):
            return candidate
    current = registered()
    if current is not None:
        if is_running(current):
            return current
        unregister(current)  # stale: its supervisor is gone
    for candidate in local:
        if (candidate / STATE_FILE).is_file() or (candidate / API_TOKEN_FILE).is_file():
            return candidate
    return None
