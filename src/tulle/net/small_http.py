"""The request side of Tulle's small HTTP/1.1 listeners: one request per connection.

The control plane's admin port (control/admin.py) and its metrics API and
dashboard (viz/api.py) serve operators and scrapers a few requests a second
on asyncio streams, answer, and close. Both read a request the same way, here:
the head up to the blank line within a time limit, then the request line and
headers. Not the proxy's path: proxies read requests with codec/http1.py.
The listener's own life (its bound address, its bounded close) is shared here
too, with the webhook (control/webhook.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

READ_TIMEOUT_S = 5.0
# What ends an exchange without an answer: the client was too slow, left, or
# sent a head longer than the stream's limit (64 KiB). The connection is closed.
CLIENT_GONE = (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError)


@dataclass(frozen=True, slots=True)
class SimpleRequest:
    method: str
    target: str
    # Names lower-case, values stripped; a repeated name keeps its last value.
    headers: Mapping[str, str]


async def read_head(reader: asyncio.StreamReader, timeout_s: float = READ_TIMEOUT_S) -> bytes:
    """The request head, blank line included; raises one of CLIENT_GONE."""
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)


def parse_head(raw: bytes) -> SimpleRequest | None:
    """The request line and headers of `raw`; None when the request line is not
    three words (the caller answers 400). Never raises: any byte decodes as latin-1."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3:
        return None
    headers = {
        name.strip().lower(): value.strip()
        for name, sep, value in (line.partition(":") for line in lines[1:])
        if sep
    }
    return SimpleRequest(method=parts[0], target=parts[1], headers=headers)


def bound_address(server: asyncio.Server) -> tuple[str, int]:
    """The (host, port) `server`'s first socket is bound to (port 0 picks one)."""
    sockname = server.sockets[0].getsockname()
    return str(sockname[0]), int(sockname[1])


async def close_server(server: asyncio.Server | None) -> None:
    """Stop listening; waits at most a second for open connections, never raises."""
    if server is not None:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)
