"""PolicyWatcher and WatchInbound against real `tulle control` replicas: the first
policy, edits within a second, broken edits, fail-closed, fail-static and recovery."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from support.ports import free_port, refused_port
from support.process import ProcessGroup

# The control-plane launcher lives beside the control-plane tests; reuse it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "control"))
from control_launcher import Replica, start_control, write_manifest

from tulle.api.policy_client import PolicyWatcher
from tulle.api.proto import policy_pb2 as pb
from tulle.api.proto import policy_pb2_grpc as pb_grpc
from tulle.core.backoff import BackoffSpec
from tulle.core.policy import InboundPolicy

pytestmark = pytest.mark.integration

FAST_BACKOFF = BackoffSpec(min_s=0.05, max_s=0.5, jitter=0.5)
WAIT_S = 8.0
A = "spiffe://tulle.local/ns/default/sa/a"
B = "spiffe://tulle.local/ns/default/sa/b"


def mesh(admin_identity: str = A, default: str = "deny") -> str:
    return f"""\
services:
  - name: web
    port: 8080
    endpoints: [127.0.0.1:9001]
policy:
  servers:
    - name: web-http
      workload: web
      port: 8080
      defaultPolicy: {default}
      probePaths: [/healthz]
  authentications:
    - {{name: admin-id, identities: ["{admin_identity}"]}}
    - {{name: anyone, unauthenticated: true}}
  httpRoutes:
    - name: health
      server: web-http
      matches: [{{path: {{type: Exact, value: /health}}, method: GET}}]
    - {{name: admin, server: web-http, matches: [{{path: {{value: /admin}}, method: POST}}]}}
  authorizationPolicies:
    - {{name: health-open, target: {{httpRoute: health}}, requiredAuthentications: [anyone]}}
    - {{name: admin-only, target: {{httpRoute: admin}}, requiredAuthentications: [admin-id]}}
"""


def no_headers(name: bytes) -> bytes | None:
    return None


def may_post_admin(policy: InboundPolicy, client_id: str) -> bool:
    return policy.authorize_http(client_id, "10.0.0.1", b"POST", b"/admin", no_headers).allowed


async def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


def kill(replica: Replica) -> None:
    replica.process.signal(signal.SIGKILL)
    replica.process.wait_exit(5.0)


def test_the_watcher_follows_edits_and_refuses_broken_ones(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(mesh())
    replica = start_control(processes, manifest)

    async def scenario() -> None:
        watcher = PolicyWatcher([replica.grpc_address], "web", 8080, proxy_id="test-proxy")
        changes: list[InboundPolicy] = []
        watcher.add_listener(changes.append)
        assert not watcher.known
        assert not may_post_admin(watcher.current, A)  # fail closed before the answer
        watcher.start()
        try:
            assert await watcher.wait_known(WAIT_S)
            policy = watcher.current
            assert (policy.server, policy.protocol, policy.default_mode) == (
                "web-http",
                "http/1.1",
                "deny",
            )
            assert may_post_admin(policy, A) and not may_post_admin(policy, B)
            health = policy.authorize_http(None, "192.0.2.9", b"GET", b"/health", no_headers)
            assert (health.allowed, health.policy, health.route) == (True, "health-open", "health")

            write_manifest(manifest, mesh(admin_identity=B))
            took = await eventually(lambda: may_post_admin(watcher.current, B), "the edit")
            assert took < 1.0, f"the edit took {took:.2f} s"
            assert not may_post_admin(watcher.current, A)

            write_manifest(manifest, mesh().replace("identities:", "identitiez:"))
            await asyncio.sleep(0.6)  # several polls of the file
            assert may_post_admin(watcher.current, B), "a broken edit replaced the policy"
            assert (
                await asyncio.to_thread(
                    replica.metric, "control_manifest_reload_total", result="error"
                )
                >= 1
            )

            write_manifest(manifest, mesh(default="audit"))
            await eventually(lambda: watcher.current.default_mode == "audit", "the audit edit")
            audited = watcher.current.authorize_http(B, "10.0.0.1", b"POST", b"/admin", no_headers)
            assert (audited.allowed, audited.audit_denied) == (True, True)
            assert len(changes) == 3
            assert watcher.reconnects == 0 and watcher.updates_rejected == 0
        finally:
            await watcher.close()
        assert await asyncio.to_thread(replica.metric, "control_policy_updates_total") >= 3

    asyncio.run(scenario())


def test_watch_inbound_with_a_plain_grpc_client(processes: ProcessGroup, tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(mesh())
    replica = start_control(processes, manifest)

    async def scenario() -> None:
        host, port = replica.grpc_address
        async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
            stub = pb_grpc.PolicyStub(channel)
            call = stub.WatchInbound(pb.InboundRequest(workload="web", port=8080, proxy_id="t"))
            first = await asyncio.wait_for(call.read(), WAIT_S)
            assert isinstance(first, pb.InboundPolicy)
            assert first.server == "web-http"
            assert [r.name for r in first.routes] == ["health", "admin"]
            assert first.default_policy == pb.DEFAULT_POLICY_DENY
            call.cancel()

            # A port no server selects gets the mesh default, not an error.
            other = stub.WatchInbound(pb.InboundRequest(workload="web", port=9999))
            message = await asyncio.wait_for(other.read(), WAIT_S)
            assert isinstance(message, pb.InboundPolicy)
            assert message.server == ""
            assert message.default_policy == pb.DEFAULT_POLICY_ALL_UNAUTHENTICATED
            other.cancel()

            bad = stub.WatchInbound(pb.InboundRequest(workload="web", port=0))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asyncio.wait_for(bad.read(), WAIT_S)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(scenario())


def test_fail_closed_without_a_control_plane() -> None:
    async def scenario() -> None:
        watcher = PolicyWatcher(
            [("127.0.0.1", refused_port())], "web", 8080, backoff=FAST_BACKOFF, warn_after_s=0.2
        )
        watcher.start()
        try:
            assert not await watcher.wait_known(0.8)
            decision = watcher.current.authorize_tcp(A, "127.0.0.1")
            assert (decision.allowed, decision.policy) == (False, "default:deny-no-policy")
            assert watcher.stream_failures >= 1
        finally:
            await watcher.close()

    asyncio.run(scenario())


def test_fail_static_then_recover_on_a_restarted_replica(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(mesh())
    port = free_port()
    first = start_control(processes, manifest, grpc_port=port, name="control-first")

    async def scenario() -> None:
        watcher = PolicyWatcher([("127.0.0.1", port)], "web", 8080, backoff=FAST_BACKOFF)
        watcher.start()
        try:
            assert await watcher.wait_known(WAIT_S)
            known = watcher.current
            await asyncio.to_thread(kill, first)
            await eventually(lambda: not watcher.connected, "the broken stream")
            write_manifest(manifest, mesh(admin_identity=B))
            await asyncio.sleep(0.5)
            # Fail static: the last policy stays in force while no replica runs.
            assert watcher.current is known and watcher.known
            assert may_post_admin(watcher.current, A)
            await asyncio.to_thread(
                start_control, processes, manifest, grpc_port=port, name="control-second"
            )
            await eventually(lambda: may_post_admin(watcher.current, B), "the restarted replica")
            assert watcher.reconnects == 1
        finally:
            await watcher.close()

    asyncio.run(scenario())
