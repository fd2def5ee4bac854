"""HTTP/2 and gRPC proxying at the stream level (over `h2`): each stream routed and balanced alone.

Public surface: `H2Service` (one per listener: makes protocols, drains them),
`H2ServerProtocol` (takes over a detected HTTP/2 connection),
`H2ClientPool` (pooled upstream connections), the `Dispatcher` seam with
`Routed`/`Refused`, `H2Counters`, `H2Limits`, and `StaticDispatcher` for tests.
"""

from tulle.proxy.errors import ProxyError, Refused

from .client import H2ClientConnection, H2ClientPool, PoolSettings
from .connection import H2Limits
from .dispatch import (
    CompletionCallback,
    Dispatcher,
    H2Counters,
    Routed,
    StaticDispatcher,
)
from .server import H2ServerProtocol, H2Service

__all__ = [
    "CompletionCallback",
    "Dispatcher",
    "H2ClientConnection",
    "H2ClientPool",
    "H2Counters",
    "H2Limits",
    "H2ServerProtocol",
    "H2Service",
    "PoolSettings",
    "ProxyError",
    "Refused",
    "Routed",
    "StaticDispatcher",
]
