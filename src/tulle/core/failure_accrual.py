"""Failure accrual: the per-endpoint circuit breaker.

Theory of operation (Finagle's FailureAccrualFactory, Linkerd's defaults):

- ``closed``: traffic flows. Each failure adds one to a run of consecutive
  failures; a success ends the run. ``max_failures`` in a row open the breaker.
- ``open``: the endpoint is ejected until a jittered, exponentially growing
  backoff has passed (``Backoff`` from ``tulle.core.backoff``). Failures that
  arrive while open belong to requests sent before the ejection and are not
  counted again.
- ``half-open``: once the backoff has passed, ``available()`` lets exactly one
  probe through at a time. The probe is claimed by ``on_dispatch()``, which the
  balancer's ``EndpointState.on_start()`` calls. A failure reopens the breaker
  with the next, longer backoff; a success closes it and resets the backoff.
  ``on_cancel()`` (the client gave up) frees the probe slot without a verdict.

Any success closes the breaker, whatever the state, as in Finagle: a response
that worked is better evidence than the timer. Results are not tied to
individual requests (that would cost an allocation per request), so in
half-open the first result to arrive is taken as the probe's. It is still a
fresh result from that endpoint.

The open -> half-open step happens lazily inside ``available(now)``, so no timer
is needed. ``state`` therefore still reads "open" after the backoff has passed,
until the next ``available()`` call.
"""

from __future__ import annotations

import random

from tulle.core.backoff import Backoff, BackoffSpec

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"

DEFAULT_ACCRUAL_BACKOFF = BackoffSpec(min_s=1.0, max_s=60.0)


class FailureAccrual:
    """One endpoint's breaker. ``now`` is the caller's ``time.monotonic()``."""

    __slots__ = (
        "_backoff",
        "_probe_in_flight",
        "_retry_at",
        "consecutive_failures",
        "max_failures",
        "state",
    )

    def __init__(
        self,
        max_failures: int = 7,
        backoff: BackoffSpec = DEFAULT_ACCRUAL_BACKOFF,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if max_failures < 1:
            raise ValueError("failure accrual max_failures must be >= 1")
        self.max_failures = max_failures
        self.state: str = CLOSED
        self.consecutive_failures = 0
        self._backoff = Backoff(backoff, rng)
        self._retry_at = 0.0
        self._probe_in_flight = False

    def available(self, now: float) -> bool:
        """May a request be sent? Moves open -> half-open once the backoff is over."""
        state = self.state
        if state is CLOSED:
            return True
        if state is OPEN:
            if now < self._retry_at:
                return False
            self.state = HALF_OPEN
            self._probe_in_flight = False
            return True
        return not self._probe_in_flight

    def on_dispatch(self) -> None:
        """A request was sent to this endpoint; in half-open it is the probe."""
        if self.state is HALF_OPEN:
            self._probe_in_flight = True

    def on_cancel(self) -> None:
        """A request was abandoned before its result; in half-open another probe may go."""
        if self.state is HALF_OPEN:
            self._probe_in_flight = False

    def record(self, success: bool, now: float) -> None:
        """The result of one request to this endpoint, finished at ``now``."""
        if success:
            if self.state is not CLOSED:
                self.state = CLOSED
                self._probe_in_flight = False
                self._backoff.reset()
            self.consecutive_failures = 0
            return
        state = self.state
        if state is CLOSED:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.max_failures:
                self._open(now)
        elif state is HALF_OPEN:
            self._open(now)

    @property
    def retry_at(self) -> float:
        """When an open breaker lets its next probe through (meaningless when closed)."""
        return self._retry_at

    def _open(self, now: float) -> None:
        self.state = OPEN
        self._probe_in_flight = False
        self._retry_at = now + self._backoff.next_delay()
