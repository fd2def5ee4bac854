"""The `tulle` console script: a light dispatcher over the command groups.

Each command group lives in its own module and adds its commands to the root
typer `app` (`from tulle.cli.main import app`). Importing typer, rich and every
group costs more than half a second of CPU, and people run `tulle stat` many
times a minute, so `run()` imports only what the command line needs:

- `tulle --version` imports nothing but this module;
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
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from tulle import __version__

if TYPE_CHECKING:
    import typer

    app: typer.Typer

NAME = "tulle"
HELP = "Tulle: a service mesh. A light sidecar proxy beside every service, and a control plane."
VERSION_HELP = "Print the version and exit."

# Every top-level command: its one-line help as the root help shows it, and the
# modules that register it. In the order typer lists them (commands in the order
# their modules register them, then sub-groups), so the root help reads the same.
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "stat": (
        "Golden metrics per service, instance or workload: success rate, RPS, latency, mTLS.",
        ("tulle.cli.observe",),
    ),
    "routes": (
        "Golden metrics per route of one service (as its callers see it).",
        ("tulle.cli.observe",),
    ),
    "edges": (
        "Who calls whom: rate, success, identities and whether the edge is mTLS.",
        ("tulle.cli.observe",),
    ),
    "top": (
        "The busiest paths right now (live, from tap), refreshing until Ctrl-C.",
        ("tulle.cli.observe",),
    ),
    "tap": (
        "Watch live requests through a service's proxies: method, path, status, latency, identity.",
        ("tulle.cli.observe",),
    ),
    "check": (
        "Health checks of the mesh (or --pre: of this machine); exits 1 when one fails.",
        ("tulle.cli.observe",),
    ),
    "apply": (
        "Change a running mesh: merge FILE into the control plane's manifest (validated first).",
        ("tulle.cli.observe",),
    ),
    "authz": (
        "Show the authorization policies that apply to SERVICE, and how often each decided.",
        ("tulle.cli.authz",),
    ),
    "control": (
        "Run a control-plane replica serving the Destination API from a manifest.",
        ("tulle.cli.control",),
    ),
    "dashboard": (
        "Open the dashboard (served by the control plane) in a browser, or print its URL.",
        ("tulle.cli.dashboard",),
    ),
    "install": (
        "Print the control plane's Kubernetes objects: `tulle install | kubectl apply -f -`.",
        ("tulle.cli.install",),
    ),
    "uninstall": (
        "Print what removes Tulle: `tulle uninstall | kubectl delete -f -`.",
        ("tulle.cli.install",),
    ),
    "inject": (
        "Add Tulle's proxy to every pod template of FILE (- for stdin), printed as YAML.",
        ("tulle.cli.inject",),
    ),
    "proxy-await": (
        "Wait until the local proxy is ready (the injected postStart hook); exit 1 on timeout.",
        ("tulle.cli.inject",),
    ),
    "proxy": (
        "Run the sidecar proxy beside one workload instance: outbound for the app's calls, "
        "inbound for calls to the app, admin for metrics and health.",
        ("tulle.cli.proxy",),
    ),
    "init": (
        "Capture this network namespace's TCP for the sidecar (iptables), or --remove it.",
        ("tulle.cli.init",),
    ),
    "up": (
        "Run a whole mesh on this machine: control plane, every service with its sidecar, ingress.",
        ("tulle.cli.up",),
    ),
    "down": (
        "Stop a mesh started with `tulle up --detach`, and wait until no process is left.",
        ("tulle.cli.up",),
    ),
    "manifest": ("Work with the local manifest (mesh.yaml).", ("tulle.cli.control",)),
    "demo": (
        "Run the demo: a small backend with a Tulle proxy in front of it.",
        ("tulle.cli.demo", "tulle.demo.shop.cli"),
    ),
    "identity": (
        "The mesh's certificate authority: trust anchor, issuer, join tokens, rotation.",
        ("tulle.cli.identity",),
    ),
}


def _build_app() -> typer.Typer:
    import typer

    root = typer.Typer(
        name=NAME,
        help=HELP,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    def _version(value: bool) -> None:
        if value:
            typer.echo(f"{NAME} {__version__}")
            raise typer.Exit()

    @root.callback()
    def main(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help=VERSION_HELP
        ),
    ) -> None:
        """Tulle: a service mesh."""

    return root


def __getattr__(name: str) -> Any:
    # `from tulle.cli.main import app` in a group module builds the root app once.
    if name == "app":
        built = _build_app()
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    root: typer.Typer = globals().get("app") or __getattr__("app")
    root()
