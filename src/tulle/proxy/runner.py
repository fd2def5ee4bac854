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

CONFIG_ENV = "TULLE_PROXY_CONFIG_JSON"
# glibc's M_MMAP_THRESHOLD for mallopt(3); MALLOC_MMAP_THRESHOLD_ is its variable.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 << 20


def main() -> int:
    text = os.environ.pop(CONFIG_ENV, "")
    if not text:
        print("tulle.proxy.runner: start the proxy with `tulle proxy`", file=sys.stderr)
        return 2
    return serve(config_from_json(text))


def raise_mmap_threshold() -> None:
    """Allocations up to 4 MiB come from the heap, not from mmap.

    uvloop's TLS layer reads into a fresh 256 KiB buffer on every read; above
    glibc's default 128 KiB mmap threshold each one is an mmap/munmap pair
    (8 % of a mesh-TLS proxy's CPU in a profile). A higher threshold keeps
    them in the heap: +14-35 % requests/s over mTLS, no change in plaintext.
    The exec path sets MALLOC_MMAP_THRESHOLD_ instead; setting it here is the
    same for glibc, and needs no second interpreter.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return  # chosen by whoever started us (or by the exec path)
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return


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
