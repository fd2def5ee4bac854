"""Reading the traffic-control fields: a route's `fault`, a policy's `rateLimits`.

One module for the features of docs/manifest.md's "Fault injection" and
docs/policy.md's "Rate limits", used by the services and policy readers:
each function takes the reader (anything with its checking methods,
`ManifestChecks`) and returns the core spec, or None after reporting
problems. The fields are documented in docs/manifest.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from yaml.nodes import Node

from tulle.core.discovery import FaultSpec, HeaderMatch

T = TypeVar("T")

# gRPC status codes 1..16 (0 is OK, which is no abort).
GRPC_STATUS_MAX = 16


class ManifestChecks(Protocol):
    """The parser's checking methods these fields use."""

    @property
    def problems(self) -> Sequence[object]: ...

    def problem(self, node: Node | None, path: str, message: str) -> None: ...

    def mapping(
        self,
        node: Node,
        path: str,
        allowed: tuple[str, ...],
        required: tuple[str, ...] = (),
    ) -> dict[str, Node] | None: ...

    def integer(self, node: Node, path: str, low: int, high: int) -> int | None: ...

    def number(self, node: Node, path: str, low: float, high: float) -> float | None: ...

    def duration(self, node: Node, path: str) -> float | None: ...

    def items(
        self, node: Node, path: str, convert: Callable[[Node, str], T | None]
    ) -> list[T] | None: ...

    def header_match(self, node: Node, path: str) -> HeaderMatch | None: ...


def fault(p: ManifestChecks, node: Node, path: str) -> FaultSpec | None:
    """`routes[].fault`: `delay: {duration, percent}`, `abort: {status, grpcStatus,
    percent}`, `headers: [header matches]`; at least one of delay and abort."""
    fields = p.mapping(node, path, ("delay", "abort", "headers"))
    if fields is None:
        return None
    before = len(p.problems)
    delay_s = delay_percent = 0.0
    if "delay" in fields:
        delay = p.mapping(
            fields["delay"], f"{path}.delay", ("duration", "percent"), ("duration", "percent")
        )
        if delay is not None:
            if "duration" in delay:
                delay_s = p.duration(delay["duration"], f"{path}.delay.duration") or 0.0
            if "percent" in delay:
                delay_percent = p.number(delay["percent"], f"{path}.delay.percent", 0, 100) or 0.0
    status = 0
    grpc_status: int | None = None
    abort_percent = 0.0
    if "abort" in fields:
        abort = p.mapping(
            fields["abort"], f"{path}.abort", ("status", "grpcStatus", "percent"), ("percent",)
        )
        if abort is not None:
            if "status" in abort:
                status = p.integer(abort["status"], f"{path}.abort.status", 200, 599) or 0
            if "grpcStatus" in abort:
                grpc_status = p.integer(
                    abort["grpcStatus"], f"{path}.abort.grpcStatus", 1, GRPC_STATUS_MAX
                )
            if "status" not in abort and "grpcStatus" not in abort:
                p.problem(fields["abort"], f"{path}.abort", "give status, grpcStatus or both")
            if "percent" in abort:
                abort_percent = p.number(abort["percent"], f"{path}.abort.percent", 0, 100) or 0.0
    if "delay" not in fields and "abort" not in fields:
        p.problem(node, path, "give delay, abort or both")
    headers: list[HeaderMatch] = []
    if "headers" in fields:
        headers = p.items(fields["headers"], f"{path}.headers", p.header_match) or []
    if len(p.problems) > before:
        return None
    return FaultSpec(
        delay_s=delay_s,
        delay_percent=delay_percent,
        abort_status=status,
        abort_grpc_status=grpc_status,
        abort_percent=abort_percent,
        headers=tuple(headers),
    )
