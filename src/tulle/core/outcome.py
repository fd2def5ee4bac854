"""How one attempt to an endpoint ended, as the balancer and failure accrual judge it.

Three outcomes, not two: an attempt the client abandoned (an HTTP/1 client
that disconnects mid-request, an HTTP/2 RST_STREAM from the client, a
cancelled gRPC call) is neither a success nor a failure of the endpoint. It
says nothing about the endpoint's health or latency, so it must not feed
failure accrual (seven cancellations in a row would otherwise eject a healthy
endpoint) nor the peak-EWMA (the time to a cancellation is the client's
patience, not the endpoint's latency).

Every protocol reports exactly one `Outcome` per attempt; metrics keep their
own classification (a cancelled request still counts as a 499 or a gRPC
CANCELLED in `response_total`).
"""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    SUCCESS = "success"  # the endpoint answered, and the answer counts as a success
    FAILURE = "failure"  # the endpoint failed: refused, reset, timed out, or a counted 5xx
    CANCELLED = "cancelled"  # the client gave up first: no evidence about the endpoint


SUCCESS = Outcome.SUCCESS
FAILURE = Outcome.FAILURE
CANCELLED = Outcome.CANCELLED
