"""Reading `services:`: endpoints, routes, timeouts, retries and traffic splits."""

from __future__ import annotations

from collections.abc import Mapping

from yaml.nodes import MappingNode, Node, ScalarNode

from tulle.codec.http2 import GrpcStatus
from tulle.control.manifest import traffic
from tulle.control.manifest.matches import MatchReader
from tulle.control.manifest.model import ServiceSpec
from tulle.control.manifest.reader import _INT, _line
from tulle.core.discovery import (
    Backend,
    Endpoint,
    Profile,
    RetryBudgetSpec,
    Route,
    RouteMatch,
    parse_address,
)

# What a client should expect the endpoints of a service to speak.
PROTOCOL_HINTS = {"http/1.1": "http/1.1", "h2": "h2", "grpc": "h2", "opaque": "opaque"}
DEFAULT_ENDPOINT_WEIGHT = 10_000
MAX_WEIGHT = 1_000_000


class ServicesReader(MatchReader):
    def grpc_status(self, node: Node, path: str) -> int | None:
        """A gRPC status by name (UNAVAILABLE, as GRPCRoute and Linkerd write
        them) or number (0-16)."""
        if isinstance(node, ScalarNode) and node.tag == _INT:
            return self.integer(node, path, 0, 16)
        text = self.string(node, path, what="a gRPC status name")
        if text is None:
            return None
        member = GrpcStatus.__members__.get(text.upper().replace("-", "_"))
        if member is None:
            names = ", ".join(GrpcStatus.__members__)
            self.problem(node, path, f"unknown gRPC status {text!r} (one of {names})")
            return None
        return int(member)

    def local_service_fields(self, name: str | None, fields: Mapping[str, Node], path: str) -> None:
        """`instances:` belongs to the local runner (tulle.local.manifest): ignored here."""

    def service(
        self, node: Node, path: str, pending_backends: list[tuple[Node, str, str]]
    ) -> ServiceSpec | None:
        fields = self.mapping(
            node,
            path,
            (
                "name",
                "port",
                "protocol",
                "identity",
                "endpoints",
                "instances",
                "timeout",
                "routes",
                "retryBudget",
                "backends",
                "affinity",
                "requestOverride",
            ),
            required=("name",),
        )
        if fields is None:
            return None
        before = len(self.problems)
        name = self.name(fields["name"], f"{path}.name") if "name" in fields else None
        if name is not None:
            self.declared.add(name)
        port = self.integer(fields["port"], f"{path}.port", 1, 65535) if "port" in fields else None
        protocol = self.protocol(fields, path)
        identity = None
        if "identity" in fields:
            identity = self.identity(fields["identity"], f"{path}.identity")
        hint = PROTOCOL_HINTS[protocol]
        endpoints: list[Endpoint] = []
        if "endpoints" in fields:
            seen: dict[tuple[str, int], int] = {}
            nodes = self.sequence(fields["endpoints"], f"{path}.endpoints") or []
            for i, ep_node in enumerate(nodes):
                ep_path = f"{path}.endpoints[{i}]"
                endpoint = self.endpoint(ep_node, ep_path, identity, hint)
                if endpoint is None:
                    continue
                if endpoint.address in seen:
                    self.problem(
                        ep_node,
                        ep_path,
                        f"duplicate endpoint {endpoint.address[0]}:{endpoint.address[1]} "
                        f"(first on line {seen[endpoint.address]})",
                    )
                    continue
                seen[endpoint.address] = _line(ep_node)
                endpoints.append(endpoint)
        self.local_service_fields(name, fields, path)
        timeout = (
            self.duration(fields["timeout"], f"{path}.timeout") if "timeout" in fields else None
        )
        routes: list[Route] = []
        if "routes" in fields:
            route_names: dict[str, int] = {}
            nodes = self.sequence(fields["routes"], f"{path}.routes") or []
            for i, route_node in enumerate(nodes):
                route_path = f"{path}.routes[{i}]"
                route = self.route(route_node, route_path)
                if route is None:
                    continue
                if route.name in route_names:
                    self.problem(
                        route_node,
                        f"{route_path}.name",
                        f'duplicate route "{route.name}" (first on line {route_names[route.name]})',
                    )
                    continue
                route_names[route.name] = _line(route_node)
                routes.append(route)
        if protocol == "opaque" and routes:
            self.problem(
                fields["routes"],
                f"{path}.routes",
                "an opaque (TCP) service has no HTTP routes; drop them or change the protocol",
            )
        budget = RetryBudgetSpec()
        if "retryBudget" in fields:
            budget = self.retry_budget(fields["retryBudget"], f"{path}.retryBudget") or budget
        backends: list[Backend] = []
        if "backends" in fields:
            backends = self.backends(fields["backends"], f"{path}.backends", pending_backends)
        affinity = None
        if "affinity" in fields:
            affinity = traffic.affinity(self, fields["affinity"], f"{path}.affinity")
        override: tuple[str, ...] = ()
        if "requestOverride" in fields:
            override = traffic.request_override(
                self, fields["requestOverride"], f"{path}.requestOverride"
            )
        if name is None or len(self.problems) > before:
            return None
        return ServiceSpec(
            name=name,
            port=port,
            protocol=protocol,
            endpoints=tuple(endpoints),
            profile=Profile(
                routes=tuple(routes),
                retry_budget=budget,
                backends=tuple(backends),
                timeout_s=timeout,
                affinity=affinity,
                override_identities=override,
            ),
            identity=identity,
            line=_line(node),
        )

    def endpoint(
        self, node: Node, path: str, service_identity: str | None, hint: str
    ) -> Endpoint | None:
        address_node = node
        weight = DEFAULT_ENDPOINT_WEIGHT
        identity = service_identity
        labels: dict[str, str] = {}
        if isinstance(node, MappingNode):
            fields = self.mapping(
                node, path, ("address", "weight", "identity", "labels"), required=("address",)
            )
            if fields is None or "address" not in fields:
                return None
            address_node = fields["address"]
            path_address = f"{path}.address"
            if "weight" in fields:
                weight = self.integer(fields["weight"], f"{path}.weight", 1, MAX_WEIGHT) or weight
            if "identity" in fields:
                identity = self.identity(fields["identity"], f"{path}.identity")
            if "labels" in fields:
                labels = self.string_map(fields["labels"], f"{path}.labels") or {}
        else:
            path_address = path
        text = self.string(address_node, path_address, what='an address like "127.0.0.1:8080"')
        if text is None:
            return None
        try:
            host, port = parse_address(text)
        except ValueError as exc:
            self.problem(address_node, path_address, str(exc))
            return None
        if port == 0:
            self.problem(address_node, path_address, f'bad address "{text}": port 0')
            return None
        return Endpoint(
            address=(host, port),
            weight=weight,
            identity=identity,
            protocol_hint=hint,
            labels=labels,
        )

    def route(self, node: Node, path: str) -> Route | None:
        fields = self.mapping(
            node,
            path,
            (
                "name",
                "matches",
                "timeout",
                "timeouts",
                "retryable",
                "retry",
                "fault",
                "accessLog",
                "mirror",
                "rateLimit",
            ),
            required=("name",),
        )
        if fields is None:
            return None
        before = len(self.problems)
        name = (
            self.string(fields["name"], f"{path}.name", what="a route name")
            if "name" in fields
            else None
        )
        matches: list[RouteMatch] = []
        if "matches" in fields:
            matches = self.items(fields["matches"], f"{path}.matches", self.route_match) or []
        timeout = None
        if "timeout" in fields and "timeouts" in fields:
            self.problem(fields["timeouts"], f"{path}.timeouts", "give either timeout or timeouts")
        elif "timeout" in fields:
            timeout = self.duration(fields["timeout"], f"{path}.timeout")
        elif "timeouts" in fields:
            timeouts = self.mapping(fields["timeouts"], f"{path}.timeouts", ("request",))
            if timeouts and "request" in timeouts:
                timeout = self.duration(timeouts["request"], f"{path}.timeouts.request")
        retryable = None
        if "retryable" in fields:
            retryable = self.boolean(fields["retryable"], f"{path}.retryable")
        statuses: list[int] = []
        grpc_statuses: list[int] = []
        if "retry" in fields:
            retry = self.mapping(fields["retry"], f"{path}.retry", ("codes", "grpcStatuses"))
            if retry is not None and "codes" in retry:
                statuses = (
                    self.items(
                        retry["codes"],
                        f"{path}.retry.codes",
                        lambda n, p: self.integer(n, p, 100, 599),
                    )
                    or []
                )
            if retry is not None and "grpcStatuses" in retry:
                grpc_statuses = (
                    self.items(
                        retry["grpcStatuses"], f"{path}.retry.grpcStatuses", self.grpc_status
                    )
                    or []
                )
            if retryable is False:
                self.problem(
                    fields["retry"], f"{path}.retry", "the route says retryable: false; drop one"
                )
            elif retry is not None:
                retryable = True
        fault = None
        if "fault" in fields:
            fault = traffic.fault(self, fields["fault"], f"{path}.fault")
        mirror = None
        if "mirror" in fields:
            mirror = traffic.mirror(self, fields["mirror"], f"{path}.mirror")
        rate_limit = None
        if "rateLimit" in fields:
            rate_limit = traffic.limit(self, fields["rateLimit"], f"{path}.rateLimit")
        access_log = False
        if "accessLog" in fields:
            access_log = bool(self.boolean(fields["accessLog"], f"{path}.accessLog"))
        if name is None or len(self.problems) > before:
            return None
        return Route(
            name=name,
            matches=tuple(matches),
            timeout_s=timeout,
            retryable=retryable,
            retry_statuses=tuple(statuses),
            fault=fault,
            access_log=access_log,
            mirror=mirror,
            retry_grpc_statuses=tuple(grpc_statuses),
            rate_limit=rate_limit,
        )

    def retry_budget(self, node: Node, path: str) -> RetryBudgetSpec | None:
        fields = self.mapping(node, path, ("retryRatio", "minRetriesPerSecond", "ttl"))
        if fields is None:
            return None
        default = RetryBudgetSpec()
        ratio, minimum, ttl = default.ratio, default.min_retries_per_second, default.ttl_s
        before = len(self.problems)
        if "retryRatio" in fields:
            ratio = self.number(fields["retryRatio"], f"{path}.retryRatio", 0.0, 100.0) or 0.0
        if "minRetriesPerSecond" in fields:
            minimum = (
                self.number(fields["minRetriesPerSecond"], f"{path}.minRetriesPerSecond", 0.0, 1e6)
                or 0.0
            )
        if "ttl" in fields:
            ttl = self.duration(fields["ttl"], f"{path}.ttl") or ttl
        if len(self.problems) > before:
            return None
        return RetryBudgetSpec(ratio=ratio, min_retries_per_second=minimum, ttl_s=ttl)

    def backends(
        self, node: Node, path: str, pending: list[tuple[Node, str, str]]
    ) -> list[Backend]:
        nodes = self.sequence(node, path)
        if nodes is None:
            return []
        backends: list[Backend] = []
        seen: set[str] = set()
        for i, item in enumerate(nodes):
            item_path = f"{path}[{i}]"
            fields = self.mapping(item, item_path, ("name", "weight"), ("name", "weight"))
            if fields is None or "name" not in fields or "weight" not in fields:
                continue
            name = self.name(fields["name"], f"{item_path}.name")
            weight = self.integer(fields["weight"], f"{item_path}.weight", 0, MAX_WEIGHT)
            if name is None or weight is None:
                continue
            if name in seen:
                self.problem(fields["name"], f"{item_path}.name", f'backend "{name}" given twice')
                continue
            seen.add(name)
            pending.append((fields["name"], f"{item_path}.name", name))
            backends.append(Backend(service=name, weight=weight))
        if backends and sum(b.weight for b in backends) == 0:
            self.problem(node, path, "at least one backend needs a weight above zero")
        return backends
