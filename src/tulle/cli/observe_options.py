"""The options of `tulle stat|routes|edges`: spellings, defaults and variables, as data.

Read by the typer commands (`tulle.cli.observe`) and by the typer-free parser
(`tulle.cli.observe_fast`) alike, so the two cannot drift apart; the unit
tests compare this table with the typer commands' parameters.
"""

from __future__ import annotations

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
