"""`tulle demo shop SERVICE`: run one demo-shop service in the foreground.

Registered under `tulle demo` from `tulle.cli.up` (the demo-shop and `tulle up`
ship together). Options after the service name go to the service itself.
"""

from __future__ import annotations

import importlib

import typer

from tulle.cli.demo import demo_app

SHOP_SERVICES = ("web", "catalog", "cart", "payments", "loadgen")


@demo_app.command(
    "shop",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def shop(
    context: typer.Context,
    service: str = typer.Argument(..., help=f"The service to run: {', '.join(SHOP_SERVICES)}."),
) -> None:
    """Run one service of the demo shop (what `tulle up` runs with no manifest).

    Extra options go to the service: --port (default $PORT), --replica, and
    per service e.g. catalog --slow-replica, payments --failure-rate,
    loadgen --rps; `python -m tulle.demo.shop.SERVICE --help` lists them.
    """
    if service not in SHOP_SERVICES:
        typer.echo(
            f"tulle demo shop: unknown service {service!r}; choose one of "
            f"{', '.join(SHOP_SERVICES)}",
            err=True,
        )
        raise typer.Exit(2)
    module = importlib.import_module(f"tulle.demo.shop.{service}")
    raise typer.Exit(module.main(list(context.args)))
