"""One stream of every process's output, each line prefixed, plus a file each.

A thread per child reads its merged stdout/stderr line by line, appends each
line to the child's log file and writes it to the terminal as
`web-0       | line`, with a colour per process when the terminal supports it.
Threads, not asyncio: pipes are blocking and a child that floods its output
must slow only its own thread, never the supervisor's restart loop.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
from typing import IO

# Bright ANSI colours that read on dark and light backgrounds; red is kept for
# the supervisor's own warnings.
_COLOURS = ("36", "32", "35", "33", "34", "96", "92", "95", "93", "94")
_RESET = "\x1b[0m"


def colour_enabled(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


class LogStream:
    """Writes prefixed lines to the terminal; one lock keeps lines whole."""

    def __init__(self, out: IO[str] | None = None, width: int = 12) -> None:
        self.out = out if out is not None else sys.stdout
        self.colour = colour_enabled(self.out)
        self.width = width
        self._lock = threading.Lock()
        self._colours: dict[str, str] = {}
        self._next_colour = itertools.cycle(_COLOURS)

    def held(self) -> threading.Lock:
        """Hold this while printing something that must not be interleaved."""
        return self._lock

    def _prefix(self, name: str) -> str:
        text = f"{name:<{self.width}} | "
        if not self.colour:
            return text
        code = self._colours.get(name)
        if code is None:
            code = self._colours[name] = next(self._next_colour)
        return f"\x1b[{code}m{text}{_RESET}"

    def line(self, name: str, text: str) -> None:
        prefix = self._prefix(name)
        with self._lock, contextlib.suppress(OSError, ValueError):
            self.out.write(prefix + text + "\n")
            self.out.flush()

    def supervisor(self, text: str, *, warning: bool = False) -> None:
        """A line from `tulle up` itself."""
        name = "tulle up"
        if warning and self.colour:
            prefix = f"\x1b[1;31m{name:<{self.width}} | {_RESET}"
            with self._lock, contextlib.suppress(OSError, ValueError):
                self.out.write(prefix + text + "\n")
                self.out.flush()
            return
        self.line(name, text)

    def pump(self, name: str, pipe: IO[bytes], log_file: IO[bytes]) -> threading.Thread:
        """Start copying `pipe` to `log_file` and the terminal until EOF."""

        def copy() -> None:
            try:
                for raw in iter(pipe.readline, b""):
                    with contextlib.suppress(OSError, ValueError):
                        log_file.write(raw)
                        log_file.flush()
                    self.line(name, raw.decode("utf-8", "replace").rstrip("\r\n"))
            finally:
                with contextlib.suppress(OSError):
                    pipe.close()
                with contextlib.suppress(OSError):
                    log_file.close()

        thread = threading.Thread(target=copy, name=f"log-{name}", daemon=True)
        thread.start()
        return thread
