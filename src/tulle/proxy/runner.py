"""The lean process image of `tulle proxy`, and `serve(config)`, its one entry.

`tulle proxy` normally reads its flags without typer (`tulle.cli.proxy_flags`)
and calls `serve` in the same process. When typer had to parse them (a flag
the fast parser does not know), the CLI replaces itself (`exec`, same pid)
with `python -m tulle.proxy.runner`, which imports only the proxy: typer pulls
in click and rich, ~10 MB of resident memory that every sidecar would
otherwise carry for its lifetime. The validated configuration travels in one
environment variable.
"""

from __future__ import annotations

import logging
import os
import sys

from tulle.proxy.config import ProxyConfig, config_from_json
from tulle.proxy.heap import raise_mmap_threshold

CONFIG_ENV = "TULLE_PROXY_CONFIG_JSON"


def main() -> int:
    text = os.environ.pop(CONFIG_ENV, "")
    if not text:
        print("tulle.proxy.runner: start the proxy with `tulle proxy`", file=sys.stderr)
        return 2
    return serve(config_from_json(text))


def serve(config: ProxyConfig) -> int:
    """Run the proxy in this process until it stops; returns the exit code."""
    raise_mmap_threshold()
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from tulle.proxy.app import run

    return run(config)


if __name__ == "__main__":
    sys.exit(main())
