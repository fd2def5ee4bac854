"""`tulle stat|routes|edges` without typer's parsing: answers in a tenth of a second.

Running any typer command imports pydantic (typer coerces every parameter
with it): 0.15-0.2 s of CPU before the command does anything, for commands
people run many times a minute. These three only read a few plain options, so
`run_fast` reads them itself and calls the command's function in
`tulle.cli.observe` directly (typer's decorator returns the function as it
is). As with `tulle proxy` (`tulle.cli.proxy_flags`), anything it is not sure
of (`--help`, an unknown or repeated option, a missing argument, a value typer
would refuse) makes it return, and typer parses the same command line and
prints its usual message. The unit tests compare `COMMANDS` with the typer
commands' parameters.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Option:
    """One option: its spellings, the function's parameter, a flag or a value."""

    name: str
    spellings: tuple[str, ...]
    default: str | bool
    envvar: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def is_flag(self) -> bool:
        return isinstance(self.default, bool)


@dataclass(frozen=True, slots=True)
class Command:
    # The positional argument: its parameter name and default (None: required).
    argument: str
    argument_default: str | None
    options: tuple[Option, ...]


# Shared with the typer commands of `tulle.cli.observe`, which take their
# spellings, defaults and variables from these.
WINDOW = Option("window", ("--window", "-w"), "60s")
JSON = Option("as_json", ("--json",), False)
CONTROL = Option("control", ("--control",), "", envvar="TULLE_CONTROL_URL")
STATE_DIR = Option("state_dir", ("--state-dir",), "", envvar="TULLE_STATE_DIR")
NAMESPACE = Option("namespace", ("--namespace", "-n"), "", envvar="TULLE_NAMESPACE")
ALL_NAMESPACES = Option("all_namespaces", ("--all-namespaces", "-A"), False)

# `tulle stat KIND/NAME` spellings of Kubernetes workload kinds, as kubectl's, to
# the short kind a pod target's `workload` is written with
# (tulle.control.kubernetes.pods).
WORKLOAD_KINDS = {
    **dict.fromkeys(("deploy", "deployment", "deployments"), "deploy"),
    **dict.fromkeys(("sts", "statefulset", "statefulsets"), "sts"),
    **dict.fromkeys(("ds", "daemonset", "daemonsets"), "ds"),
    **dict.fromkeys(("rs", "replicaset", "replicasets"), "rs"),
    **dict.fromkeys(("job", "jobs"), "job"),
    **dict.fromkeys(("po", "pod", "pods"), "pod"),
}


COMMANDS: dict[str, Command] = {
    "stat": Command(
        "service",
        "",
        (
            Option(
                "kind", ("--kind", "-k"), "service", choices=("service", "instance", "workload")
            ),
            NAMESPACE,
            ALL_NAMESPACES,
            WINDOW,
            JSON,
            CONTROL,
            STATE_DIR,
        ),
    ),
    "routes": Command("service", None, (NAMESPACE, WINDOW, JSON, CONTROL, STATE_DIR)),
    "edges": Command("", "", (NAMESPACE, ALL_NAMESPACES, WINDOW, JSON, CONTROL, STATE_DIR)),
}


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
