"""Policy messages: the control plane's encoder and the proxy's decoder agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tulle.api.policy_client import PolicyDecodeError, policy_from_message
from tulle.api.proto import policy_pb2 as pb
from tulle.control.manifest import Manifest, parse_manifest
from tulle.control.policy.index import PolicyIndex
from tulle.control.policy.translate import policy_message
from tulle.control.destination.translator import UpdateQueue
from tulle.core.policy import DENY

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
