"""Inbound authorization's counting (tulle.proxy.authz), with a stub policy watcher."""

from __future__ import annotations

from tulle.core.policy import Decision
from tulle.proxy.authz import InboundAuthz
from tulle.proxy.metrics import Metrics

WEB = "spiffe://tulle.test/ns/default/sa/web"


class _Watcher:
    current: object = None
    port = 8080

    def add_listener(self, listener: object) -> None:
        pass


def _decision(allowed: bool, audit_denied: bool = False) -> Decision:
    return Decision(allowed, audit_denied, "books-policy", "books-http", "")


def test_decisions_are_counted_by_verdict_server_policy_and_client() -> None:
    metrics = Metrics()
    authz = InboundAuthz(_Watcher(), metrics)  # type: ignore[arg-type]
    for _ in range(3):
        authz.record("http", _decision(True), WEB)
    authz.record("http", _decision(False), "")
    authz.record("tcp", _decision(False), WEB)
    labels = (("server", "books-http"), ("policy", "books-policy"))
    assert metrics.counters[("inbound_http_authz_allow_total", (*labels, ("client_id", WEB)))] == 3
    assert metrics.counters[("inbound_http_authz_deny_total", (*labels, ("client_id", "")))] == 1
    assert metrics.counters[("inbound_tcp_authz_deny_total", (*labels, ("client_id", WEB)))] == 1


def test_audit_mode_counts_what_it_would_have_denied() -> None:
    metrics = Metrics()
    authz = InboundAuthz(_Watcher(), metrics)  # type: ignore[arg-type]
    authz.record("http", _decision(True, audit_denied=True), WEB)
    authz.record("http", _decision(True, audit_denied=True), WEB)
    would = [v for (name, _), v in metrics.counters.items() if name.endswith("would_deny_total")]
    assert would == [2]
