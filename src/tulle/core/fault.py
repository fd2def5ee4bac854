"""Fault injection: which requests of a route get a delay or an abort.

Pure: the proxy builds one `FaultInjector` per route when a profile arrives
and asks it per request (`decide`) with the request's header lookup; the
random source is injected so that tests are exact. A route without a fault
has no injector, so the request path pays one `is None` test for the feature.

Delay and abort are drawn independently (as Envoy and Istio do): a request
may be delayed, aborted, or delayed then aborted. Percentages are of the
eligible requests: those carrying every header of `FaultSpec.headers`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from tulle.core.discovery import FaultSpec

HeaderLookup = Callable[[bytes], bytes | None]

# What `tulle-proxy-error` (and the metrics' error label) says of an injected abort.
FAULT_REASON = "fault-injected"


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What to do to one request: wait `delay_s` first, then abort or go on."""

    delay_s: float
    abort: bool


class FaultInjector:
    """The fault of one route, compiled once per profile."""

    __slots__ = ("_abort", "_both", "_delay", "_headers", "_random", "spec")

    def __init__(self, spec: FaultSpec, rand: Callable[[], float] = random.random) -> None:
        self.spec = spec
        self._random = rand
        self._headers = tuple(
            (h.name.encode("latin-1"), re.compile(h.value) if h.regex else None, h.value)
            for h in spec.headers
        )
        # The few possible answers, built once: no allocation per request.
        self._delay = FaultDecision(spec.delay_s, False)
        self._abort = FaultDecision(0.0, True)
        self._both = FaultDecision(spec.delay_s, True)

    def _eligible(self, header: HeaderLookup) -> bool:
        for name, regex, value in self._headers:
            got = header(name)
            if got is None:
                return False
            text = got.decode("latin-1")
            if regex is not None:
                if regex.fullmatch(text) is None:
                    return False
            elif text != value:
                return False
        return True

    def decide(self, header: HeaderLookup) -> FaultDecision | None:
        """The fault for one request, or None to leave it alone."""
        spec = self.spec
        if self._headers and not self._eligible(header):
            return None
        rand = self._random
        delay = spec.delay_percent > 0.0 and rand() * 100.0 < spec.delay_percent
        abort = spec.abort_percent > 0.0 and rand() * 100.0 < spec.abort_percent
        if abort:
            return self._both if delay else self._abort
        return self._delay if delay else None

    def abort_status(self, is_grpc: bool) -> tuple[int, int | None]:
        """(HTTP status, gRPC status or None) of an abort for this caller."""
        spec = self.spec
        if is_grpc and spec.abort_grpc_status is not None:
            return 200, spec.abort_grpc_status
        return spec.abort_status or 503, None
