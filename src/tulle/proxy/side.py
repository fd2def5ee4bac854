"""What the per-request code knows of a direction: a `Side`, read as attributes.

The inbound and outbound sides (tulle.proxy.inbound.INBOUND,
tulle.proxy.outbound.OUTBOUND) differ in a few per-request choices; each is a
precomputed attribute here, so a request reads a flag instead of comparing
the direction string (which stays only as a metrics and tap label value).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Side:
    """One direction's fixed choices."""

    # The label value of `direction` in metrics, tap events and spans.
    direction: str
    # Inbound: the caller is another workload; the proxy speaks for it to the
    # app (sets `tulle-client-id`, drops a caller's copy), enforces the
    # inbound policy, and its spans are server spans.
    inbound: bool
    # The span attribute naming the verified mTLS peer.
    peer_id_attr: str
