"""Per-direction state shared by every connection of one worker: the context a
connection is built with (config, router, metrics, open connections, drain flag).

It knows the protocols' connections only as `ClientConnection` (what the
worker's sweeper and drain ask of one), so that it imports no protocol module
and the protocols can import it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from tulle.codec.http1 import HOPS_LINES
from tulle.proxy.config import ProxyConfig
from tulle.proxy.metrics import Metrics, TcpStats
from tulle.proxy.mirror import Mirrors
from tulle.proxy.plan import PlanContext
from tulle.proxy.router import Router
from tulle.proxy.side import Side
from tulle.proxy.tap import TapHub

if TYPE_CHECKING:
    from tulle.net.descriptors import DescriptorBudget
    from tulle.net.mtls import MeshTls
    from tulle.proxy.accesslog import AccessLog
    from tulle.proxy.authz import InboundAuthz
    from tulle.proxy.tracing import Tracer


class ClientConnection(Protocol):
    """A client connection as the worker sees it (an `Http1Server`)."""

    def sweep(self, now: float, header_read_s: float, idle_s: float, draining: bool) -> None:
        """Called every sweep: time out a slow request head, close an idle connection."""
        ...

    def close_if_idle(self) -> None:
        """Drain: close now unless a request is in flight or arriving."""
        ...

    def abort(self) -> None:
        """The grace period is over: cut the connection."""
        ...


class ProxyContext:
    """Everything one direction (inbound or outbound) of a worker shares."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        side: Side,
        config: ProxyConfig,
        router: Router,
        metrics: Metrics,
        tap: TapHub,
    ) -> None:
        self.loop = loop
        # The side's choices, read per request as plain attributes; the
        # direction string is only a label value (metrics, tap, spans).
        self.side = side
        self.direction = direction = side.direction
        self.inbound = side.inbound
        self.config = config
        self.router = router
        self.metrics = metrics
        # Live tap: exchanges are published only while someone listens.
        self.tap = tap
        self.connections: set[ClientConnection] = set()
        self.draining = False
        # Requests that crossed this many proxy hops are refused (loop-detected);
        # capped so that the next hop's count is always in the pre-built table.
        self.max_hops = min(config.limits.max_hops, len(HOPS_LINES) - 2)
        self.downstream_tcp: TcpStats = metrics.tcp(direction, "src", "")
        # Mesh TLS, when the proxy has an identity; None means plaintext only.
        self.mesh: MeshTls | None = None
        # What every request plan of this direction reads (tulle.proxy.plan).
        self.plan = PlanContext(
            side,
            router,
            metrics,
            tap,
            discovery_s=config.timeouts.discovery_s,
            response_s=config.timeouts.response_s,
            max_replay_bytes=config.limits.max_replay_bytes,
        )
        # Copies for routes that mirror (tulle.proxy.mirror); idle otherwise.
        self.mirrors = Mirrors(loop, metrics, direction)
        # The process's descriptor budget (tulle.net.descriptors); None: unchecked.
        self.fds: DescriptorBudget | None = None
        # Distributed tracing (tulle.proxy.tracing); None: off, one test per request.
        self.tracer: Tracer | None = None

    @property
    def authz(self) -> InboundAuthz | None:
        """Inbound authorization policy; None: every caller is allowed."""
        return self.plan.authz

    @authz.setter
    def authz(self, authz: InboundAuthz | None) -> None:
        self.plan.authz = authz

    @property
    def access_log(self) -> AccessLog | None:
        """The access log (tulle.proxy.accesslog); None: off, one test per request."""
        return self.plan.access_log

    @access_log.setter
    def access_log(self, access_log: AccessLog | None) -> None:
        self.plan.access_log = access_log

    def record_rejected(self, status: int, reason: str) -> None:
        """A request refused before it had an authority (bad input)."""
        stats = self.metrics.http(self.direction, "", "", "", "")
        stats.requests += 1
        stats.record_response(status, False, 0.0, reason)
