"""`tulle stat|routes|edges` without typer's parsing: answers in a tenth of a second.

Running any typer command imports pydantic (typer coerces every parameter
with it): 0.15-0.2 s of CPU before the command does anything, for commands
people run many times a minute. These three only read a few plain options, so
`run_fast` reads them itself and calls the command's function in
`tulle.cli.observe` directly (typer's decorator returns the function as it
is). As with `tulle proxy` (`tulle.cli.proxy_flags`), anything it is not sure
of (`--help`, an unknown or repeated option, a missing argument, a value typer
would refuse) makes it return, and typer parses the same command line and
prints its usual message. The options come from `tulle.cli.observe_options`,
which the typer commands read too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from tulle.cli.observe_options import COMMANDS, Command


def parse(
    command: Command, args: Sequence[str], environ: Mapping[str, str]
) -> dict[str, str | bool] | None:
    """The function's keyword arguments; None when typer should parse `args`."""
    by_spelling = {s: option for option in command.options for s in option.spellings}
    values: dict[str, str | bool] = {}
    positional: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        index += 1
        if not token.startswith("-") or token == "-":
            positional.append(token)
            continue
        option = by_spelling.get(token)
        if option is None or option.name in values:
            return None  # --help, an unknown option, `--x=y`, a repeat: typer's
        if option.is_flag:
            values[option.name] = True
            continue
        if index == len(args) or args[index].startswith("-"):
            return None
        value = args[index]
        index += 1
        if option.choices is not None and value not in option.choices:
            return None
        values[option.name] = value
    for option in command.options:
        if option.name not in values:
            from_env = environ.get(option.envvar) if option.envvar else None
            values[option.name] = from_env if from_env else option.default
    if command.argument:
        if len(positional) > 1 or (not positional and command.argument_default is None):
            return None
        values[command.argument] = positional[0] if positional else str(command.argument_default)
    elif positional:
        return None
    return values


def run_fast(name: str, args: Sequence[str]) -> None:
    """Run `tulle NAME ARGS` and exit; returns when typer must parse them."""
    values = parse(COMMANDS[name], args, os.environ)
    if values is None:
        return
    import typer

    from tulle.cli import observe

    function = getattr(observe, name)
    code = function.__code__
    if set(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]) != set(values):
        # The command gained or lost a parameter this table does not know:
        # calling it directly would pass typer's OptionInfo as a value.
        return
    try:
        function(**values)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    sys.exit(0)
