"""Inbound authorization: who may call this workload, decided per request and connection.

The policy comes from the control plane (`Policy.WatchInbound`, followed live
by `tulle.api.policy_client.PolicyWatcher`); the decision itself is the pure
`tulle.core.policy.InboundPolicy.authorize_http / authorize_tcp`. Until the
first answer the watcher's policy is fail-closed (deny). This module counts
every decision in `inbound_{http,tcp}_authz_{allow,deny}_total{server, policy,
client_id}` and logs what audit mode let through.

A proxy with no `--workload` (or no control plane) has no `InboundAuthz` and
enforces nothing: every caller is allowed, as before policy existed.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from tulle.core.policy import Decision, InboundPolicy
from tulle.proxy.metrics import Labels, Metrics

if TYPE_CHECKING:
    from tulle.api.policy_client import PolicyWatcher

log = logging.getLogger(__name__)

# Audit lines are rate-limited: at most one per this many seconds.
AUDIT_LOG_INTERVAL_S = 5.0


class InboundAuthz:
    def __init__(self, watcher: PolicyWatcher, metrics: Metrics) -> None:
        self.watcher = watcher
        self._metrics = metrics
        self._labels: dict[tuple[str, str, str, str, bool], tuple[str, Labels]] = {}
        self._last_audit_log = 0.0

    @property
    def policy(self) -> InboundPolicy:
        return self.watcher.current

    def record(self, kind: str, decision: Decision, client_id: str) -> None:
        """Count one decision (`kind` is "http" or "tcp")."""
        key = (kind, decision.server, decision.policy, client_id, decision.allowed)
        entry = self._labels.get(key)
        if entry is None:
            verdict = "allow" if decision.allowed else "deny"
            labels: Labels = (
                ("server", decision.server),
                ("policy", decision.policy),
                ("client_id", client_id),
            )
            entry = (f"inbound_{kind}_authz_{verdict}_total", labels)
            if len(self._labels) < 10_000:
                self._labels[key] = entry
        counters = self._metrics.counters
        counter_key = (entry[0], entry[1])
        counters[counter_key] = counters.get(counter_key, 0) + 1
        if decision.audit_denied:
            self._metrics.inc("inbound_authz_audit_would_deny_total", entry[1])
            now = time.monotonic()
            if now - self._last_audit_log >= AUDIT_LOG_INTERVAL_S:
                self._last_audit_log = now
                log.warning(
                    "audit: policy would deny a %s call from %s on server %r (%s)",
                    kind,
                    client_id or "an unauthenticated client",
                    decision.server,
                    decision.policy,
                )
