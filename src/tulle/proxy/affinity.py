"""Session affinity on the request path: a service's ring of endpoint states.

Built by `ServiceTarget` whenever its endpoints or its profile change (never
per request) when the profile asks for affinity (`AffinitySpec`); HTTP/1 and
HTTP/2 ask `pick` before the balancer on a request's first attempt. A
request without the key, or whose every endpoint is ejected or full, falls
back to the balancer (P2C). Retries never use the ring: they go elsewhere.

Counted in `affinity_pick_total{dst_service, result}`: `hashed` (the ring
chose) or `no-key` (balanced as usual).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tulle.core.affinity import HashRing, request_key
from tulle.core.discovery import AffinitySpec
from tulle.proxy.balance import EndpointState
from tulle.proxy.metrics import Labels, Metrics


def _load(state: EndpointState) -> int:
    return state.pending


class AffinityPicker:
    __slots__ = ("_counters", "_hashed", "_no_key", "ring", "spec")

    def __init__(
        self,
        spec: AffinitySpec,
        states: Sequence[EndpointState],
        metrics: Metrics,
        service: str,
    ) -> None:
        self.spec = spec
        self.ring: HashRing[EndpointState] = HashRing(
            [
                (f"{s.endpoint.address[0]}:{s.endpoint.address[1]}", s.endpoint.weight, s)
                for s in states
            ]
        )
        self._counters = metrics.counters
        base: Labels = (("dst_service", service),)
        self._hashed = ("affinity_pick_total", (*base, ("result", "hashed")))
        self._no_key = ("affinity_pick_total", (*base, ("result", "no-key")))

    def pick(self, header: Callable[[bytes], bytes | None], now: float) -> EndpointState | None:
        key = request_key(self.spec, header)
        counters = self._counters
        if key is None:
            counters[self._no_key] = counters.get(self._no_key, 0) + 1
            return None
        state = self.ring.pick(key, _load, lambda s: s.available(now), self.spec.load_factor)
        if state is not None:
            counters[self._hashed] = counters.get(self._hashed, 0) + 1
        return state
