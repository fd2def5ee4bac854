"""`InboundAuthz`: the policy of the app port a connection goes to (no sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tulle.core.policy import FAIL_CLOSED, InboundPolicy, fail_closed
from tulle.proxy.authz import MAX_WATCHED_PORTS, InboundAuthz
from tulle.proxy.metrics import Metrics


@dataclass
class FakeWatcher:
    port: int
    current: InboundPolicy = field(default_factory=fail_closed)
    listeners: list[object] = field(default_factory=list)

    def add_listener(self, listener: object) -> None:
        self.listeners.append(listener)


def test_each_app_port_gets_its_own_watcher_and_policy() -> None:
    made: list[int] = []

    def watch(port: int) -> FakeWatcher:
        made.append(port)
        return FakeWatcher(port, fail_closed("web", port))

    default = FakeWatcher(8080, fail_closed("web", 8080))
    authz = InboundAuthz(default, Metrics(), watch)  # type: ignore[arg-type]
    assert authz.policy_at(None) is default.current  # a direct connection: --app-addr's port
    assert authz.policy_at(("127.0.0.1", 8080)) is default.current
    # A port never seen has no policy yet: fail closed, not another port's.
    assert authz.policy_at(("127.0.0.1", 2525)) is FAIL_CLOSED
    banner = authz.watcher_for(2525)
    assert banner is not None and made == [2525]
    assert authz.watcher_for(2525) is banner and made == [2525]  # started once
    assert authz.policy_at(("127.0.0.1", 2525)) is banner.current
    assert authz.watcher_for(8080) is default
    # Every watched port's new policies reach the JWT key loader (off the request path).
    assert len(default.listeners) == 1 and len(banner.listeners) == 1


def test_watched_ports_are_bounded() -> None:
    authz = InboundAuthz(
        FakeWatcher(8080),  # type: ignore[arg-type]
        Metrics(),
        lambda port: FakeWatcher(port),  # type: ignore[arg-type,return-value]
    )
    for port in range(1, MAX_WATCHED_PORTS + 10):
        authz.watcher_for(10_000 + port)
    assert len(authz.watchers()) == MAX_WATCHED_PORTS
    assert authz.watcher_for(60_000) is None
    assert authz.policy_at(("127.0.0.1", 60_000)) is FAIL_CLOSED
