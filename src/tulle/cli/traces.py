"""`tulle trace-receiver`: a small OTLP/HTTP receiver for the proxies' spans
(tulle.viz.otlp_receiver), for a mesh without a collector of its own."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import typer

from tulle.cli.app import app
from tulle.core.discovery import parse_address


@app.command("trace-receiver")
def trace_receiver(
    listen: str = typer.Option(
        "127.0.0.1:4318", "--listen", help="HOST:PORT to accept OTLP/HTTP on (4318 is OTLP's)."
    ),
    out: str = typer.Option("", "--out", help="Append each span to this file as a JSON line."),
    keep: int = typer.Option(10_000, "--keep", min=1, help="Spans kept for GET /traces."),
) -> None:
    """Receive the proxies' spans over OTLP/HTTP; keep them for GET /traces and a file."""
    from tulle.viz.otlp_receiver import serve

    try:
        host, port = parse_address(listen)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--listen") from None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, port, Path(out) if out else None, keep))
