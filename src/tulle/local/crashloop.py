"""When the supervisor of a local mesh stops restarting a process (no I/O).

Kubernetes' CrashLoopBackOff keeps retrying forever, with a delay that grows
to five minutes; a local mesh is watched by a person at a terminal, so
`tulle up` gives up instead, and says so (state.json, the terminal, `tulle
check`):

* a command that cannot be started at all (exec failed: not found, not
  executable) is given up at once: restarting cannot make it exist;
* a process that fails `limit` times within `window_s` seconds is given up
  (a crash loop): it is neither flapping through a transient error nor ever
  going to be ready, and its restarts would only bury its first error in the
  log.

A process that stays up longer than the window never reaches the limit,
however often it crashes over a day.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

# Exit statuses a shell uses when it cannot run the command it was given.
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


def describe_exit(code: int | None) -> str:
    """`exited with code 1`, with what the code means when a shell or signal chose it."""
    if code is None:
        return "could not be started"
    if code == EXIT_NOT_FOUND:
        return f"exited with code {code} (command not found)"
    if code == EXIT_NOT_EXECUTABLE:
        return f"exited with code {code} (command not executable)"
    if code < 0:
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass(frozen=True, slots=True)
class CrashLoopSpec:
    """`limit` failures within `window_s` seconds make a crash loop (supervisor.CRASH_LOOP)."""

    limit: int
    window_s: float


@dataclass(slots=True)
class CrashLoop:
    """The recent failures of one process, and whether it has been given up."""

    spec: CrashLoopSpec
    failures: deque[float] = field(default_factory=deque)
    # Why the supervisor stopped restarting it; empty while it still does.
    gave_up: str = ""

    def cannot_start(self, now: float, reason: str) -> None:
        """Exec failed: give up now."""
        self.failures.append(now)
        self.gave_up = reason

    def failed(self, now: float) -> bool:
        """Count one failure; True when this one makes it a crash loop (given up)."""
        self.failures.append(now)
        while self.failures and now - self.failures[0] > self.spec.window_s:
            self.failures.popleft()
        if len(self.failures) >= self.spec.limit:
            self.gave_up = (
                f"crash loop: failed {len(self.failures)} times "
                f"within {self.spec.window_s:g}s; not restarted again"
            )
            return True
        return False
