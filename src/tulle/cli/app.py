"""The root typer app that every command group adds its commands to.

A group module registers its commands with `from tulle.cli.app import app`.
`app` is built on first use (PEP 562 module `__getattr__`): typer costs a
tenth of a second to import, and the dispatcher (`tulle.cli.main`) gets here
only when typer must parse the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tulle import __version__
from tulle.cli.commands import HELP, NAME, VERSION_HELP

if TYPE_CHECKING:
    import typer

    app: typer.Typer


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
    # `from tulle.cli.app import app` in a group module builds the root app once.
    if name == "app":
        built = _build_app()
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
