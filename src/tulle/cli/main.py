"""The `tulle` console script: the root typer app and the registry of command groups."""

from __future__ import annotations

import typer

from tulle import __version__

app = typer.Typer(
    name="tulle",
    help="Tulle: a service mesh. A light sidecar proxy beside every service, and a control plane.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tulle {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Tulle: a service mesh."""


def _register() -> None:
    # Each command group lives in its own module and adds itself to `app`.
    from tulle.cli import (  # noqa: F401
        authz,
        control,
        dashboard,
        demo,
        identity,
        install,
        observe,
        proxy,
        up,
    )


def run() -> None:
    _register()
    app()
