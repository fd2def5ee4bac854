"""The `tulle` console script: a light dispatcher over the command groups.

Each command group lives in its own module and adds its commands to the root
typer `app` (`from tulle.cli.app import app`). Importing typer, rich and every
group costs more than half a second of CPU, and people run `tulle stat` many
times a minute, so `run()` imports only what the command line needs:

- `tulle --version` imports nothing but this module and the table of commands
  (`tulle.cli.commands`);
- `tulle`, `tulle --help`: the root help, drawn by `tulle.cli.roothelp` from
  `COMMANDS` (rich, no typer, no group module);
- `tulle proxy ...`: `tulle.cli.proxy_flags` parses the flags without typer and
  runs the proxy in this process (the sidecar's start-up is on every pod's
  critical path); anything it does not accept goes the typer way below, which
  prints the same messages as always;
- `tulle stat|routes|edges ...`: the same with `tulle.cli.observe_fast` (running
  a typer command imports pydantic, a fifth of a second);
- `tulle NAME ...` for a name in `COMMANDS`: only that group's modules, then typer;
- anything else (an unknown command, `--install-completion`, shell completion):
  every group, then typer, exactly as before.

`app` itself is built on first use (PEP 562 module `__getattr__`), so a module
that registers commands imports typer and nothing here has to. A command added
to a group must be added to `COMMANDS` too (the unit tests compare the two).

This module is the entry point: no other module imports it (it imports every
group by name, so a group importing it would close a circle; the unit test
`tests/unit/test_import_graph.py` says so).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from tulle import __version__
from tulle.cli.commands import COMMANDS, NAME

if TYPE_CHECKING:
    import typer


def register_all() -> None:
    """Import every command group (the full app, as typer alone would see it)."""
    import importlib

    for _, modules in COMMANDS.values():
        for module in modules:
            importlib.import_module(module)


def _completing() -> bool:
    # Shell completion runs the program with _<PROG>_COMPLETE set (click's
    # convention, e.g. _TULLE_COMPLETE): only the full typer app answers it.
    return any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ)


def run() -> None:
    args = sys.argv[1:]
    first = args[0] if args else None
    if _completing():
        first = ""  # neither a fast path nor a single group: typer, with every group
    if first == "--version":
        print(f"{NAME} {__version__}")
        return
    if first is None or first in ("--help", "-h"):
        from tulle.cli import roothelp

        if roothelp.render():
            # Like typer's no_args_is_help: no arguments is a usage error (2).
            sys.exit(0 if first else 2)
    elif first == "proxy":
        from tulle.cli import proxy_flags

        proxy_flags.run_fast(args[1:])  # returns only when typer must parse
    elif first in ("stat", "routes", "edges"):
        from tulle.cli import observe_fast

        observe_fast.run_fast(first, args[1:])  # the same
    if first in COMMANDS:
        import importlib

        for module in COMMANDS[first][1]:
            importlib.import_module(module)
    else:
        register_all()
    from tulle.cli.app import app

    root: typer.Typer = app
    root()
