"""Inbound authorization: who may call this workload, decided per request and connection.

The policy comes from the control plane (`Policy.WatchInbound`, followed live
by `tulle.api.policy_client.PolicyWatcher`); the decision itself is the pure
`tulle.core.policy.InboundPolicy.authorize_http / authorize_tcp`. Until the
first answer the watcher's policy is fail-closed (deny). This module counts
every decision in `inbound_{http,tcp}_authz_{allow,deny}_total{server, policy,
client_id}` and logs what audit mode let through.

A proxy with no `--workload` (or no control plane) has no `InboundAuthz` and
enforces nothing: every caller is allowed, as before policy existed.

The policy is per port (docs/policy.md: a Server is one port of a workload).
A connection made straight to the inbound gets the policy of `--app-addr`'s
port (`policy`); a captured one goes to the app at its original port and
gets that port's policy (`policy_at`), followed from the port's first
connection on (`watcher_for`, at most MAX_WATCHED_PORTS ports; past that, and
for a port not watched, fail closed).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from tulle.core.policy import FAIL_CLOSED, Decision, InboundPolicy
from tulle.proxy.metrics import Labels, Metrics
from tulle.proxy.ratelimit import InboundRateLimits

if TYPE_CHECKING:
    from collections.abc import Callable

    from tulle.api.policy_client import PolicyWatcher
    from tulle.core.discovery import Address
    from tulle.proxy.jwt import InboundJwt

log = logging.getLogger(__name__)

# Audit lines are rate-limited: at most one per this many seconds.
AUDIT_LOG_INTERVAL_S = 5.0
# App ports whose policy one proxy follows (a stream each to the control plane).
MAX_WATCHED_PORTS = 64


class InboundAuthz:
    def __init__(
        self,
        watcher: PolicyWatcher,
        metrics: Metrics,
        watch: Callable[[int], PolicyWatcher] | None = None,
        workers: int = 1,
    ) -> None:
        self.watcher = watcher
        self._metrics = metrics
        # Asked only for requests whose policy has a limit (`rate_limited`).
        self.limits = InboundRateLimits(metrics, workers)
        # Built on first need (it imports the JOSE library): `jwt`.
        self._jwt: InboundJwt | None = None
        watcher.add_listener(self._prepare_jwt)
        self._labels: dict[tuple[str, str, str, str, bool], tuple[str, Labels]] = {}
        self._last_audit_log = 0.0
        self._ports: dict[int, PolicyWatcher] = {watcher.port: watcher}
        self._watch = watch

    @property
    def policy(self) -> InboundPolicy:
        return self.watcher.current

    def policy_at(self, app_dst: Address | None) -> InboundPolicy:
        """The policy of the app port a connection goes to (None: `--app-addr`'s)."""
        if app_dst is None:
            return self.watcher.current
        watcher = self._ports.get(app_dst[1])
        return watcher.current if watcher is not None else FAIL_CLOSED

    def watcher_for(self, port: int) -> PolicyWatcher | None:
        """The watcher of an app port, started on first use; None past the bound."""
        watcher = self._ports.get(port)
        if watcher is None and self._watch is not None and len(self._ports) < MAX_WATCHED_PORTS:
            watcher = self._ports[port] = self._watch(port)
            watcher.add_listener(self._prepare_jwt)
        return watcher

    @property
    def jwt(self) -> InboundJwt:
        """End-user token checks; asked only for requests whose policy has `jwt_checks`."""
        if self._jwt is None:
            from tulle.proxy.jwt import InboundJwt

            self._jwt = InboundJwt(self._metrics)
        return self._jwt

    def _prepare_jwt(self, policy: InboundPolicy) -> None:
        # Off the request path: load the keys a new policy needs before its first request.
        if policy.jwt_checks:
            self.jwt.prepare(policy)

    async def close(self) -> None:
        """Stop the JWKS tasks (the watchers are the caller's to close)."""
        if self._jwt is not None:
            await self._jwt.close()

    def watchers(self) -> list[PolicyWatcher]:
        return list(self._ports.values())

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
