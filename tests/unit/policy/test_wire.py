"""Policy messages: the control plane's encoder and the proxy's decoder agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tulle.api.policy_client import PolicyDecodeError, PolicyWatcher, policy_from_message
from tulle.api.proto import policy_pb2 as pb
from tulle.control.destination.translator import UpdateQueue
from tulle.control.manifest import Manifest, parse_manifest
from tulle.control.policy.index import PolicyIndex
from tulle.control.policy.translate import policy_message
from tulle.core.policy import DENY, InboundPolicy

DOC = Path(__file__).resolve().parents[3] / "docs" / "policy.md"


def example_manifest(replace: tuple[str, str] = ("", "")) -> Manifest:
    text = DOC.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    return parse_manifest(text.replace(*replace) if replace[0] else text)


@pytest.mark.parametrize(("workload", "port"), [("web", 8080), ("db", 5432), ("frontend", 80)])
def test_a_round_trip_gives_back_an_equal_policy(workload: str, port: int) -> None:
    policy = example_manifest().authorization.compile(workload, port)
    wire = pb.InboundPolicy.FromString(policy_message(policy).SerializeToString())
    assert policy_from_message(wire) == policy


def test_an_unspecified_default_is_deny() -> None:
    assert policy_from_message(pb.InboundPolicy(workload="w", port=1)).default_mode == DENY


def test_an_unenforceable_message_is_refused() -> None:
    message = pb.InboundPolicy(workload="w", port=1, server="s")
    auth = message.authorizations.add(name="p").required.add(name="n")
    auth.networks.rules.add(cidr="not-a-network")
    with pytest.raises(PolicyDecodeError, match="cannot enforce"):
        policy_from_message(message)


def test_an_authentication_of_an_unknown_kind_is_satisfied_by_nobody() -> None:
    message = pb.InboundPolicy(workload="w", port=1, server="s")
    message.authorizations.add(name="p").required.add(name="from-the-future")
    policy = policy_from_message(message)
    assert not policy.authorize_tcp("spiffe://tulle.local/ns/default/sa/a", "127.0.0.1").allowed


def test_the_index_publishes_changes_only() -> None:
    index = PolicyIndex(example_manifest())
    queue: UpdateQueue[pb.InboundPolicy] = UpdateQueue(4)
    key = index.subscribe("web", 8080, queue)
    assert len(queue) == 1  # the snapshot
    assert index.update_manifest(example_manifest()) == 0
    assert len(queue) == 1
    edited = example_manifest(("defaultPolicy: deny ", "defaultPolicy: audit "))
    assert index.update_manifest(edited) == 1
    assert len(queue) == 2
    first, second = queue.get_nowait(), queue.get_nowait()
    assert first is not None and second is not None
    assert first.default_policy == pb.DEFAULT_POLICY_DENY
    assert second.default_policy == pb.DEFAULT_POLICY_AUDIT
    index.unsubscribe(key, queue)
    assert index.publisher_count == 0
    assert "control_policy_publishers 0" in index.render_prometheus()


def test_a_slow_stream_overflows_instead_of_blocking() -> None:
    index = PolicyIndex(example_manifest())
    queue: UpdateQueue[pb.InboundPolicy] = UpdateQueue(1)
    index.subscribe("web", 8080, queue)
    index.update_manifest(example_manifest(("defaultPolicy: deny ", "defaultPolicy: audit ")))
    assert queue.overflowed


def test_a_bad_regular_expression_is_refused() -> None:
    message = pb.InboundPolicy(workload="w", port=1, server="s")
    message.routes.add(name="r").matches.add(path_regex="(")
    with pytest.raises(PolicyDecodeError, match="cannot enforce"):
        policy_from_message(message)


def test_the_watcher_applies_good_policies_and_keeps_them_over_bad_ones() -> None:
    watcher = PolicyWatcher([("127.0.0.1", 1)], "web", 8080)
    seen: list[InboundPolicy] = []
    watcher.add_listener(seen.append)

    def broken(policy: InboundPolicy) -> None:
        raise RuntimeError("a broken listener harms nobody")

    watcher.add_listener(broken)
    assert not watcher.known
    assert watcher.current.authorize_tcp(None, "127.0.0.1").policy == "default:deny-no-policy"
    good = policy_message(example_manifest().authorization.compile("web", 8080))
    watcher._apply(good)
    assert watcher.known and seen == [watcher.current]
    watcher._apply(good)  # a repeat changes nothing
    assert len(seen) == 1
    bad = pb.InboundPolicy(workload="web", port=8080, server="s")
    bad.authorizations.add(name="p").required.add(name="n").networks.rules.add(cidr="x")
    watcher._apply(bad)
    assert watcher.current == seen[0]
    assert (watcher.updates_received, watcher.updates_rejected) == (3, 1)
