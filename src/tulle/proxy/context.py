"""Per-direction state shared by every connection of one worker: the context a
connection is built with (config, router, metrics, open connections, drain flag)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from tulle.codec.http1 import HOPS_LINES
from tulle.proxy.config import ProxyConfig
from tulle.proxy.metrics import Metrics, TcpStats
from tulle.proxy.mirror import Mirrors
from tulle.proxy.router import Router
from tulle.proxy.tap import TapHub

if TYPE_CHECKING:
    from tulle.net.descriptors import DescriptorBudget
    from tulle.net.mtls import MeshTls
    from tulle.proxy.accesslog import AccessLog
    from tulle.proxy.authz import InboundAuthz
    from tulle.proxy.tracing import Tracer


class Http1Connection(Protocol):
    """What the worker's sweeper and drain read of an open HTTP/1 connection
    (`tulle.proxy.http1.Http1Server`), which registers itself in `connections`."""

    @property
    def current(self) -> object | None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def head_started(self) -> float: ...
    @property
    def last_active(self) -> float: ...
    def timeout_head(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class ProxyContext:
    """Everything one direction (inbound or outbound) of a worker shares."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        direction: str,
        config: ProxyConfig,
        router: Router,
        metrics: Metrics,
        tap: TapHub,
    ) -> None:
        self.loop = loop
        self.direction = direction
        self.config = config
        self.router = router
        self.metrics = metrics
        # Live tap: exchanges are published only while someone listens.
        self.tap = tap
        self.connections: set[Http1Connection] = set()
        self.draining = False
        # Requests that crossed this many proxy hops are refused (loop-detected);
        # capped so that the next hop's count is always in the pre-built table.
        self.max_hops = min(config.limits.max_hops, len(HOPS_LINES) - 2)
        self.downstream_tcp: TcpStats = metrics.tcp(direction, "src", "")
        # Mesh TLS, when the proxy has an identity; None means plaintext only.
        self.mesh: MeshTls | None = None
        # Inbound authorization policy; None: every caller is allowed.
        self.authz: InboundAuthz | None = None
        # Copies for routes that mirror (tulle.proxy.mirror); idle otherwise.
        self.mirrors = Mirrors(loop, metrics, direction)
        # The access log (tulle.proxy.accesslog); None: off, one test per request.
        self.access_log: AccessLog | None = None
        # The process's descriptor budget (tulle.net.descriptors); None: unchecked.
        self.fds: DescriptorBudget | None = None
        # Distributed tracing (tulle.proxy.tracing); None: off, one test per request.
        self.tracer: Tracer | None = None

    def record_rejected(self, status: int, reason: str) -> None:
        """A request refused before it had an authority (bad input)."""
        stats = self.metrics.http(self.direction, "", "", "", "")
        stats.requests += 1
        stats.record_response(status, False, 0.0, reason)
