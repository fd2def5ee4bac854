"""The lean process image of `tulle proxy`.

The CLI parses and validates flags with typer, then replaces itself (`exec`,
same pid) with `python -m tulle.proxy.runner`, which imports only the proxy.
typer pulls in click and, where installed, pydantic and rich: ~10 MB of
resident memory that every sidecar would otherwise carry for its lifetime.
The validated configuration travels in one environment variable.
"""

from __future__ import annotations

import logging
import os
import sys

from tulle.proxy.config import config_from_json

CONFIG_ENV = "TULLE_PROXY_CONFIG_JSON"


def main() -> int:
    text = os.environ.pop(CONFIG_ENV, "")
    if not text:
        print("tulle.proxy.runner: start the proxy with `tulle proxy`", file=sys.stderr)
        return 2
    config = config_from_json(text)
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from tulle.proxy.app import run

    return run(config)


if __name__ == "__main__":
    sys.exit(main())
