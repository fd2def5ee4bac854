"""The balancer: power of two choices over peak-EWMA cost, on the proxy's request path.

Theory of operation (linkerd2-proxy's balancer, after tower's p2c + PeakEwma):

- Every endpoint has an ``EndpointState``: its pending requests, a ``PeakEwma``
  of its response times and a ``FailureAccrual`` circuit breaker.
- ``cost = rtt_estimate * (pending + 1) * (DEFAULT_WEIGHT / weight)``. Latency
  times queue depth estimates how long a new request would wait there; the
  weight term lets discovery give an endpoint a larger or smaller share.
- ``pick(now)`` draws two distinct endpoints at random and returns the cheaper
  one. Two random choices avoid the herd behaviour of "always the cheapest"
  (every proxy piling onto the same endpoint between updates) while still
  steering away from slow or busy endpoints. HTTP picks per request; opaque TCP
  picks per connection (pass the connect time as ``rtt_s``).
- Ejected endpoints (breaker open) and half-open endpoints whose one probe is
  already out are skipped. When nothing is left, ``pick`` returns None and the
  proxy fails fast with 503 instead of queueing.

Calling convention, per request: ``state = balancer.pick(now)``; then
``state.on_start()`` before the next ``await`` (that is what claims a half-open
endpoint's single probe, so check the service's ``PendingLimit`` before
picking, not between pick and start); then exactly one ``state.on_end(now, rtt_s,
outcome)`` when the attempt is over, or the endpoint's pending count and probe
would leak. The `Outcome` (``tulle.core.outcome``) is SUCCESS, FAILURE (an
error, or a timeout) or CANCELLED: the client went away first, which says
nothing about the endpoint, so it feeds neither the EWMA nor failure accrual
(it only frees a half-open breaker's probe slot).

Endpoint changes (``set_endpoints``) replace the list the next pick draws from.
An endpoint that left is flagged ``removed`` and handed to ``on_removed``; its
in-flight requests keep their ``EndpointState`` and finish normally.

Speed: this runs on every request, so there are ``__slots__``, no logging, no
exceptions, no allocation on the common path (both candidates available), and
``now`` comes from the caller so that one clock read serves the whole request.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence

from tulle.core.discovery import Address, Endpoint
from tulle.core.ewma import PeakEwma
from tulle.core.failure_accrual import CLOSED, HALF_OPEN, OPEN, FailureAccrual
from tulle.core.outcome import CANCELLED, SUCCESS, Outcome

DEFAULT_WEIGHT = 10_000


def _cost_scale(weight: int) -> float:
    # A weight of 0 (or less) makes an endpoint a last resort rather than
    # impossible: it is still used when nothing else is available.
    return DEFAULT_WEIGHT / weight if weight > 0 else float(DEFAULT_WEIGHT)


def ejected_detail(service: str, count: int) -> str:
    """What a caller is told when every one of a service's `count` endpoints is ejected.

    Said apart from "no endpoints" (discovery knows none): an operator looking
    at the error must see that the endpoints exist and failure accrual took
    them out (they come back after a probe succeeds).
    """
    if count == 1:
        return f"the only endpoint of {service!r} is ejected by failure accrual"
    return f"all {count} endpoints of {service!r} are ejected by failure accrual"


class EndpointState:
    """What the balancer knows about one endpoint, and the proxy's slot for its pool."""

    __slots__ = ("_cost_scale", "accrual", "endpoint", "ewma", "pending", "pool", "removed")

    def __init__(
        self,
        endpoint: Endpoint,
        accrual: FailureAccrual | None = None,
        ewma: PeakEwma | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.pending = 0
        self.removed = False
        # Owned by the proxy (its connection pool for this endpoint); never touched here.
        self.pool: object | None = None
        self.accrual = accrual if accrual is not None else FailureAccrual()
        self.ewma = ewma if ewma is not None else PeakEwma()
        self._cost_scale = _cost_scale(endpoint.weight)

    @property
    def address(self) -> Address:
        return self.endpoint.address

    def replace_endpoint(self, endpoint: Endpoint) -> None:
        """New metadata (weight, identity, labels) for the same address."""
        self.endpoint = endpoint
        self._cost_scale = _cost_scale(endpoint.weight)

    def on_start(self) -> None:
        """A request is being sent here. Call before the next await after ``pick``."""
        self.pending += 1
        accrual = self.accrual
        if accrual.state is not CLOSED:
            accrual.on_dispatch()

    def on_end(self, now: float, rtt_s: float, outcome: Outcome) -> None:
        """The attempt ended at ``now`` after ``rtt_s`` seconds.

        Successes always feed the EWMA. A failure feeds it only when it was
        slower than the current estimate: a slow failure (a timeout) is real
        evidence of latency, but a fast one (connection refused, an instant 503)
        must not make a broken endpoint look cheap and draw more traffic; the
        breaker deals with those. A cancellation feeds neither.
        """
        pending = self.pending - 1
        self.pending = pending if pending > 0 else 0
        success = outcome is SUCCESS
        if not success and outcome is CANCELLED:
            self.accrual.on_cancel()
            return
        ewma = self.ewma
        if success or rtt_s > ewma.estimate(now):
            ewma.observe(rtt_s, now)
        accrual = self.accrual
        if success and accrual.state is CLOSED:
            # The common case of FailureAccrual.record, inlined: saves a call per request.
            accrual.consecutive_failures = 0
        else:
            accrual.record(success, now)

    def cost(self, now: float) -> float:
        return self.ewma.estimate(now) * (self.pending + 1) * self._cost_scale

    def available(self, now: float) -> bool:
        return not self.removed and self.accrual.available(now)

    def __repr__(self) -> str:
        host, port = self.endpoint.address
        return (
            f"EndpointState({host}:{port}, pending={self.pending}, "
            f"state={self.accrual.state}, removed={self.removed})"
        )


class Balancer:
    """P2C over peak-EWMA cost for one service's endpoints."""

    __slots__ = (
        "_accrual_factory",
        "_by_address",
        "_decay_s",
        "_default_rtt_s",
        "_on_removed",
        "_random",
        "_states",
    )

    def __init__(
        self,
        *,
        on_removed: Callable[[EndpointState], None] | None = None,
        accrual_factory: Callable[[], FailureAccrual] = FailureAccrual,
        rng: random.Random | None = None,
        default_rtt_s: float = 0.03,
        decay_s: float = 10.0,
    ) -> None:
        self._on_removed = on_removed
        self._accrual_factory = accrual_factory
        self._random = (rng or random.Random()).random
        self._default_rtt_s = default_rtt_s
        self._decay_s = decay_s
        self._by_address: dict[Address, EndpointState] = {}
        # A tuple rebuilt on every change: a pick indexes it without copying, and a
        # change never disturbs anyone still holding the previous one.
        self._states: tuple[EndpointState, ...] = ()

    def set_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the endpoint set; state (EWMA, breaker, pool) survives for kept addresses."""
        previous = self._by_address
        current: dict[Address, EndpointState] = {}
        # A joining endpoint starts at the best estimate of those already
        # measured: with the fixed default it would lose every comparison to
        # faster endpoints under light load and never get a first request.
        now = time.monotonic()
        measured = [s.ewma.estimate(now) for s in self._states if s.ewma.observed]
        seed = min(measured) if measured else self._default_rtt_s
        for endpoint in endpoints:
            state = current.get(endpoint.address) or previous.get(endpoint.address)
            if state is None:
                state = EndpointState(
                    endpoint,
                    self._accrual_factory(),
                    PeakEwma(max(seed, 1e-6), self._decay_s),
                )
            elif state.endpoint != endpoint:
                state.replace_endpoint(endpoint)
            current[endpoint.address] = state
        self._by_address = current
        self._states = tuple(current.values())
        for address, state in previous.items():
            if address not in current:
                state.removed = True
                if self._on_removed is not None:
                    self._on_removed(state)

    def pick(self, now: float) -> EndpointState | None:
        """The cheaper of two random available endpoints; None when none is available."""
        states = self._states
        count = len(states)
        if count > 1:
            random = self._random
            first = int(random() * count)
            second = int(random() * (count - 1))
            if second >= first:
                second += 1
            a = states[first]
            b = states[second]
            # available() and cost() inlined for the common case (both breakers
            # closed; states in the tuple are never removed): each saved call is
            # ~60 ns, a fifth of the whole pick.
            if (a.accrual.state is CLOSED or a.available(now)) and (
                b.accrual.state is CLOSED or b.available(now)
            ):
                a_cost = a.ewma.estimate(now) * (a.pending + 1) * a._cost_scale
                b_cost = b.ewma.estimate(now) * (b.pending + 1) * b._cost_scale
                return a if a_cost <= b_cost else b
            return self._pick_among_available(states, now)
        if count == 1:
            only = states[0]
            return only if only.accrual.state is CLOSED or only.available(now) else None
        return None

    def _pick_among_available(
        self, states: tuple[EndpointState, ...], now: float
    ) -> EndpointState | None:
        # Slow path, taken only when a drawn endpoint is ejected or busy probing:
        # redraw among the available ones so that the pair stays uniform over them.
        candidates = [state for state in states if state.available(now)]
        count = len(candidates)
        if count > 1:
            random = self._random
            first = int(random() * count)
            second = int(random() * (count - 1))
            if second >= first:
                second += 1
            a = candidates[first]
            b = candidates[second]
            return a if a.cost(now) <= b.cost(now) else b
        return candidates[0] if count == 1 else None

    def pick_avoiding(self, now: float, avoid: EndpointState) -> EndpointState | None:
        """For a retry: P2C among the available endpoints other than `avoid`
        (the one whose attempt just failed), or `avoid` itself when it is the
        only one left. A plain `pick` would often return a fast-failing
        endpoint again: its failures keep its latency estimate low.
        """
        candidates = tuple(s for s in self._states if s is not avoid and s.available(now))
        if candidates:
            return self._pick_among_available(candidates, now)
        return avoid if avoid.available(now) and not avoid.removed else None

    def states(self) -> Sequence[EndpointState]:
        """Current endpoints (not the removed ones), for metrics."""
        return self._states

    def breaker_counts(self) -> dict[str, int]:
        """Endpoints per circuit-breaker state ("closed", "open", "half-open"), for metrics."""
        counts = {CLOSED: 0, OPEN: 0, HALF_OPEN: 0}
        for state in self._states:
            counts[state.accrual.state] = counts.get(state.accrual.state, 0) + 1
        return counts

    def get(self, address: Address) -> EndpointState | None:
        return self._by_address.get(address)

    def __len__(self) -> int:
        return len(self._states)
