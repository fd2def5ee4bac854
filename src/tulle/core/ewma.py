"""Peak-EWMA round-trip-time estimate: the latency half of the balancer's cost.

Theory of operation (after Finagle's and tower's PeakEwma, which linkerd2-proxy
uses):

- A sample larger than the current estimate replaces it at once (the *peak*), so
  an endpoint that turns slow is avoided on its first slow response.
- A smaller sample is blended in with a weight that depends on the time since
  the previous observation: ``w = exp(-elapsed / decay_s)``, new estimate
  ``= old * w + sample * (1 - w)``. The estimate recovers from a peak over a few
  ``decay_s``, not over a fixed number of requests, so heavy and light traffic
  forget at the same speed.
- Between observations the estimate decays towards zero (``old * w`` with the
  elapsed time up to ``now``). tower does the same: its ``load()`` folds a
  zero-length sample in on every read. Without it an endpoint whose last
  response was very slow would keep that cost for ever, P2C would never pick it
  again, and it could never show that it recovered. With it, an idle endpoint
  becomes cheap again after a few ``decay_s`` and gets one more try.

Unlike tower, ``estimate(now)`` does not write: the decay is computed from the
last observation's stamp. Exponentials compose, so reading often or rarely gives
the same number, and a read costs no store. ``now`` is passed in (the caller's
``time.monotonic()``) so that one clock read serves a whole request.
"""

from __future__ import annotations

from math import exp


class PeakEwma:
    """One endpoint's peak-EWMA RTT estimate, in seconds."""

    # __slots__: one of these lives beside every endpoint and is read on every pick.
    __slots__ = ("_neg_inv_decay", "_stamp", "_value", "decay_s")

    def __init__(self, default_rtt_s: float = 0.03, decay_s: float = 10.0) -> None:
        if not default_rtt_s > 0:
            raise ValueError("default_rtt_s must be > 0")
        if not decay_s > 0:
            raise ValueError("decay_s must be > 0")
        self.decay_s = decay_s
        self._neg_inv_decay = -1.0 / decay_s
        self._value = default_rtt_s
        # None until the first observation: the default does not decay, so that an
        # endpoint nobody has called yet is neither preferred nor avoided.
        self._stamp: float | None = None

    def observe(self, rtt_s: float, now: float) -> None:
        """Fold in one response's round-trip time, measured at ``now``.

        The first observation replaces the default outright: the default is a
        guess, not evidence, and should not linger in the average.
        """
        stamp = self._stamp
        self._stamp = now
        if stamp is None:
            self._value = rtt_s
            return
        elapsed = now - stamp
        weight = exp(elapsed * self._neg_inv_decay) if elapsed > 0.0 else 1.0
        decayed = self._value * weight
        if rtt_s > decayed:
            self._value = rtt_s
        else:
            self._value = decayed + rtt_s * (1.0 - weight)

    @property
    def observed(self) -> bool:
        """Whether any response has been folded in (else the value is the default)."""
        return self._stamp is not None

    def estimate(self, now: float) -> float:
        """The estimate at ``now``: the last value decayed towards zero since then."""
        stamp = self._stamp
        if stamp is None or now <= stamp:
            return self._value
        return self._value * exp((now - stamp) * self._neg_inv_decay)
