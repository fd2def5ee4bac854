"""Reading the `policy:` section (docs/policy.md): servers, authentications, authorizations."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

from yaml.nodes import MappingNode, Node, SequenceNode

from tulle.control.manifest import traffic
from tulle.control.manifest.matches import MatchReader
from tulle.control.manifest.model import ServiceSpec
from tulle.control.manifest.reader import _SPIFFE_RE
from tulle.core.discovery import RouteMatch
from tulle.core.policy import (
    DEFAULT_CLOCK_SKEW_S,
    MODES,
    Authentication,
    AuthorizationPolicySpec,
    HttpRouteSpec,
    JwtSpec,
    NetworkRule,
    PolicySpec,
    ServerSpec,
    WorkloadPolicySpec,
)

_Item = TypeVar("_Item")

_HEADER_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
# Headers a claim may not be forwarded in: the proxy's own, and HTTP's.
_RESERVED_HEADERS = frozenset(
    {
        "tulle-client-id",
        "authorization",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "traceparent",
        "tracestate",
    }
)


class PolicyReader(MatchReader):
    def policy_section(self, node: Node, services: Mapping[str, ServiceSpec]) -> PolicySpec | None:
        fields = self.mapping(
            node,
            "policy",
            (
                "defaultPolicy",
                "workloads",
                "servers",
                "authentications",
                "httpRoutes",
                "authorizationPolicies",
                "rateLimits",
            ),
        )
        if fields is None:
            return None
        before = len(self.problems)
        mode = "all-unauthenticated"
        if "defaultPolicy" in fields:
            mode = self.policy_mode(fields["defaultPolicy"], "policy.defaultPolicy") or mode
        workloads = self.unique(fields.get("workloads"), "policy.workloads", self.workload_policy)
        servers = self.unique(fields.get("servers"), "policy.servers", self.server_spec)
        taken: dict[tuple[str, int | None], str] = {}
        for server, server_node in servers.values():
            key = (server.workload, server.port)
            if key in taken:
                where = f"port {server.port}" if server.port is not None else "every port"
                self.problem(
                    server_node,
                    "policy.servers",
                    f'servers "{taken[key]}" and "{server.name}" both select {where} '
                    f'of workload "{server.workload}"',
                )
            taken[key] = server.name
            if server.workload in services and server.protocol != "opaque":
                service = services[server.workload]
                if service.protocol == "opaque":
                    self.problem(
                        server_node,
                        "policy.servers",
                        f'server "{server.name}": workload "{server.workload}" is opaque; '
                        "give the server protocol: opaque",
                    )
        authentications = self.unique(
            fields.get("authentications"), "policy.authentications", self.authentication
        )
        routes = self.unique(
            fields.get("httpRoutes"),
            "policy.httpRoutes",
            lambda n, p: self.policy_route(n, p, {k: v[0] for k, v in servers.items()}),
        )
        policies = self.unique(
            fields.get("authorizationPolicies"),
            "policy.authorizationPolicies",
            lambda n, p: self.authorization_policy(
                n, p, set(servers), set(routes), set(authentications)
            ),
        )
        limits = self.unique(
            fields.get("rateLimits"),
            "policy.rateLimits",
            lambda n, p: traffic.rate_limit(self, n, p, set(servers), set(routes)),
        )
        limited: dict[tuple[bool, str], str] = {}
        for limit, limit_node in limits.values():
            target = limit.target_server or limit.target_route or ""
            limit_key = (limit.target_server is not None, target)
            if limit_key in limited:
                self.problem(
                    limit_node,
                    "policy.rateLimits",
                    f'rate limits "{limited[limit_key]}" and "{limit.limit.name}" both target'
                    f' "{target}"; give one limit per server or route',
                )
            limited[limit_key] = limit.limit.name
        if len(self.problems) > before:
            return None
        return PolicySpec(
            default_mode=mode,
            workloads=tuple(w for w, _ in workloads.values()),
            servers=tuple(s for s, _ in servers.values()),
            authentications=tuple(a for a, _ in authentications.values()),
            http_routes=tuple(r for r, _ in routes.values()),
            authorization_policies=tuple(p for p, _ in policies.values()),
            rate_limits=tuple(r for r, _ in limits.values()),
        )

    def policy_mode(self, node: Node, path: str) -> str | None:
        text = self.string(node, path, what="a default policy")
        if text is not None and text not in MODES:
            self.problem(node, path, f'expected one of {", ".join(MODES)}, got "{text}"')
            return None
        return text

    def workload_ref(self, node: Node, path: str) -> str | None:
        name = self.name(node, path)
        if name is not None and name not in self.declared:
            known = ", ".join(sorted(self.declared)) or "none"
            self.problem(node, path, f'no service named "{name}" (services: {known})')
            return None
        return name

    def probe_paths(self, node: Node, path: str) -> tuple[str, ...]:
        paths: list[str] = []
        for index, item in enumerate(self.sequence(node, path) or []):
            text = self.string(item, f"{path}[{index}]", what="a path")
            if text is not None and not text.startswith("/"):
                self.problem(item, f"{path}[{index}]", f'a path starts with "/", got "{text}"')
            elif text is not None:
                paths.append(text)
        return tuple(paths)

    def workload_policy(self, node: Node, path: str) -> WorkloadPolicySpec | None:
        fields = self.mapping(
            node, path, ("name", "defaultPolicy", "probePaths"), required=("name",)
        )
        if fields is None or "name" not in fields:
            return None
        before = len(self.problems)
        name = self.workload_ref(fields["name"], f"{path}.name")
        mode = None
        if "defaultPolicy" in fields:
            mode = self.policy_mode(fields["defaultPolicy"], f"{path}.defaultPolicy")
        probes: tuple[str, ...] = ()
        if "probePaths" in fields:
            probes = self.probe_paths(fields["probePaths"], f"{path}.probePaths")
        if name is None or len(self.problems) > before:
            return None
        return WorkloadPolicySpec(name=name, default_mode=mode, probe_paths=probes)

    def server_spec(self, node: Node, path: str) -> ServerSpec | None:
        fields = self.mapping(
            node,
            path,
            ("name", "workload", "port", "protocol", "defaultPolicy", "probePaths"),
            required=("name", "workload"),
        )
        if fields is None or "name" not in fields or "workload" not in fields:
            return None
        before = len(self.problems)
        name = self.name(fields["name"], f"{path}.name")
        workload = self.workload_ref(fields["workload"], f"{path}.workload")
        port = None
        if "port" in fields:
            port = self.integer(fields["port"], f"{path}.port", 1, 65535)
        protocol = self.protocol(fields, path)
        mode = None
        if "defaultPolicy" in fields:
            mode = self.policy_mode(fields["defaultPolicy"], f"{path}.defaultPolicy")
        probes: tuple[str, ...] = ()
        if "probePaths" in fields:
            probes = self.probe_paths(fields["probePaths"], f"{path}.probePaths")
            if protocol == "opaque" and probes:
                self.problem(
                    fields["probePaths"],
                    f"{path}.probePaths",
                    "an opaque (TCP) server has no HTTP paths; drop them or change the protocol",
                )
        if name is None or workload is None or len(self.problems) > before:
            return None
        return ServerSpec(
            name=name,
            workload=workload,
            port=port,
            protocol=protocol,
            default_mode=mode,
            probe_paths=probes,
        )

    def authentication(self, node: Node, path: str) -> Authentication | None:
        fields = self.mapping(
            node,
            path,
            ("name", "identities", "networks", "unauthenticated", "jwt"),
            required=("name",),
        )
        if fields is None or "name" not in fields:
            return None
        before = len(self.problems)
        name = self.name(fields["name"], f"{path}.name")
        kinds = [k for k in ("identities", "networks", "unauthenticated", "jwt") if k in fields]
        if len(kinds) != 1:
            self.problem(
                node,
                path,
                "give exactly one of identities, networks, jwt or unauthenticated: true"
                + (f" (got {', '.join(kinds)})" if kinds else ""),
            )
            return None
        identities = self._nonempty_list(fields, "identities", path, self.identity_pattern)
        networks = self._nonempty_list(fields, "networks", path, self.network_rule)
        if "unauthenticated" in fields:
            flag = self.boolean(fields["unauthenticated"], f"{path}.unauthenticated")
            if flag is False:
                self.problem(
                    fields["unauthenticated"],
                    f"{path}.unauthenticated",
                    "only `unauthenticated: true` means something; drop the authentication",
                )
        jwt = self.jwt_spec(fields["jwt"], f"{path}.jwt") if "jwt" in fields else None
        if name is None or len(self.problems) > before:
            return None
        return Authentication(
            name=name,
            identities=tuple(identities),
            networks=tuple(networks),
            unauthenticated="unauthenticated" in fields,
            jwt=jwt,
        )

    def jwt_spec(self, node: Node, path: str) -> JwtSpec | None:
        """An end-user JWT authentication (docs/policy.md, "End-user tokens")."""
        fields = self.mapping(
            node,
            path,
            ("issuer", "audiences", "jwksFile", "jwksUrl", "clockSkew", "claims", "forwardClaims"),
            required=("issuer",),
        )
        if fields is None or "issuer" not in fields:
            return None
        issuer = self.string(fields["issuer"], f"{path}.issuer") or ""
        audiences: list[str] = []
        if "audiences" in fields:
            for index, item in enumerate(
                self.sequence(fields["audiences"], f"{path}.audiences") or []
            ):
                audience = self.string(item, f"{path}.audiences[{index}]")
                if audience is not None:
                    audiences.append(audience)
        sources = [k for k in ("jwksFile", "jwksUrl") if k in fields]
        jwks_file = jwks_url = ""
        if len(sources) != 1:
            self.problem(node, path, "give exactly one of jwksFile or jwksUrl")
        elif "jwksFile" in fields:
            jwks_file = self.string(fields["jwksFile"], f"{path}.jwksFile") or ""
            if jwks_file and not jwks_file.startswith("/"):
                self.problem(fields["jwksFile"], f"{path}.jwksFile", "must be an absolute path")
        else:
            jwks_url = self.string(fields["jwksUrl"], f"{path}.jwksUrl") or ""
            if jwks_url and not jwks_url.startswith(("http://", "https://")):
                self.problem(fields["jwksUrl"], f"{path}.jwksUrl", "must be an http(s) URL")
        skew = DEFAULT_CLOCK_SKEW_S
        if "clockSkew" in fields:
            parsed = self.duration(fields["clockSkew"], f"{path}.clockSkew")
            if parsed is not None and parsed > 600:
                self.problem(fields["clockSkew"], f"{path}.clockSkew", "at most 10m")
            elif parsed is not None:
                skew = parsed
        claims: list[tuple[str, tuple[str, ...]]] = []
        if "claims" in fields:
            claims_node = fields["claims"]
            if not isinstance(claims_node, MappingNode):
                self.problem(claims_node, f"{path}.claims", "expected a mapping of claim: values")
            else:
                for key_node, value_node in claims_node.value:
                    claim = self.string(key_node, f"{path}.claims")
                    where = f"{path}.claims.{claim}"
                    if isinstance(value_node, SequenceNode):
                        values = [self.string(v, where) for v in value_node.value]
                    else:
                        values = [self.string(value_node, where)]
                    kept = tuple(v for v in values if v is not None)
                    if claim is not None and kept:
                        claims.append((claim, kept))
        forward: list[tuple[str, str]] = []
        if "forwardClaims" in fields:
            mapping = self.string_map(fields["forwardClaims"], f"{path}.forwardClaims") or {}
            for claim, header in mapping.items():
                lower = header.lower()
                if not _HEADER_NAME_RE.fullmatch(lower) or lower in _RESERVED_HEADERS:
                    self.problem(
                        fields["forwardClaims"],
                        f"{path}.forwardClaims.{claim}",
                        f"{header!r} cannot carry a claim (a plain header name, not one the "
                        "proxy or HTTP owns)",
                    )
                else:
                    forward.append((claim, lower))
        return JwtSpec(
            issuer=issuer,
            audiences=tuple(audiences),
            jwks_file=jwks_file,
            jwks_url=jwks_url,
            clock_skew_s=skew,
            claims=tuple(claims),
            forward_claims=tuple(forward),
        )

    def _nonempty_list(
        self,
        fields: Mapping[str, Node],
        key: str,
        path: str,
        read_item: Callable[[Node, str], _Item | None],
    ) -> list[_Item]:
        """The items of `fields[key]` that `read_item` accepts; an absent key is an
        empty list, a present but empty list is a problem."""
        out: list[_Item] = []
        if key not in fields:
            return out
        items = self.sequence(fields[key], f"{path}.{key}") or []
        for index, item in enumerate(items):
            value = read_item(item, f"{path}.{key}[{index}]")
            if value is not None:
                out.append(value)
        if not items:
            self.problem(fields[key], f"{path}.{key}", "the list is empty")
        return out

    def identity_pattern(self, node: Node, path: str) -> str | None:
        text = self.string(node, path, what="a SPIFFE ID")
        if text is None:
            return None
        if text != "*" and not _SPIFFE_RE.match(text.replace("*", "x")):
            self.problem(
                node,
                path,
                'expected a SPIFFE ID like "spiffe://tulle.local/ns/default/sa/web" '
                f'("*" matches within one segment, a lone "*" any identity), got "{text}"',
            )
            return None
        return text

    def cidr(self, node: Node, path: str) -> str | None:
        text = self.string(node, path, what='a network like "10.0.0.0/8"')
        if text is None:
            return None
        try:
            ipaddress.ip_network(text)
        except ValueError as exc:
            self.problem(node, path, f"bad network: {exc}")
            return None
        return text

    def network_rule(self, node: Node, path: str) -> NetworkRule | None:
        if not isinstance(node, MappingNode):
            cidr = self.cidr(node, path)
            return NetworkRule(cidr) if cidr is not None else None
        fields = self.mapping(node, path, ("cidr", "except"), required=("cidr",))
        if fields is None or "cidr" not in fields:
            return None
        before = len(self.problems)
        cidr = self.cidr(fields["cidr"], f"{path}.cidr")
        exceptions: list[str] = []
        if "except" in fields:
            for index, item in enumerate(self.sequence(fields["except"], f"{path}.except") or []):
                text = self.cidr(item, f"{path}.except[{index}]")
                if text is not None:
                    exceptions.append(text)
        if cidr is None or len(self.problems) > before:
            return None
        return NetworkRule(cidr, tuple(exceptions))

    def policy_route(
        self, node: Node, path: str, servers: Mapping[str, ServerSpec]
    ) -> HttpRouteSpec | None:
        fields = self.mapping(
            node, path, ("name", "server", "matches"), required=("name", "server")
        )
        if fields is None or "name" not in fields or "server" not in fields:
            return None
        before = len(self.problems)
        name = self.name(fields["name"], f"{path}.name")
        server = self.name(fields["server"], f"{path}.server")
        if server is not None and server not in servers:
            known = ", ".join(sorted(servers)) or "none"
            self.problem(
                fields["server"], f"{path}.server", f'no server named "{server}" (servers: {known})'
            )
        elif server is not None and servers[server].protocol == "opaque":
            self.problem(
                fields["server"],
                f"{path}.server",
                f'server "{server}" is opaque (TCP): it has no HTTP routes',
            )
        matches: list[RouteMatch] = []
        if "matches" in fields:
            matches = self.items(fields["matches"], f"{path}.matches", self.route_match) or []
        if name is None or server is None or len(self.problems) > before:
            return None
        return HttpRouteSpec(name=name, server=server, matches=tuple(matches))

    def authorization_policy(
        self,
        node: Node,
        path: str,
        servers: set[str],
        routes: set[str],
        authentications: set[str],
    ) -> AuthorizationPolicySpec | None:
        fields = self.mapping(
            node,
            path,
            ("name", "target", "requiredAuthentications"),
            required=("name", "target", "requiredAuthentications"),
        )
        if fields is None or "target" not in fields or "requiredAuthentications" not in fields:
            return None
        before = len(self.problems)
        name = self.name(fields["name"], f"{path}.name") if "name" in fields else None
        target_server = target_route = None
        target = self.mapping(fields["target"], f"{path}.target", ("server", "httpRoute"))
        if target is not None:
            if len(target) != 1:
                self.problem(
                    fields["target"], f"{path}.target", "give exactly one of server or httpRoute"
                )
            elif "server" in target:
                target_server = self.reference(
                    target["server"], f"{path}.target.server", "server", servers
                )
            else:
                target_route = self.reference(
                    target["httpRoute"], f"{path}.target.httpRoute", "httpRoute", routes
                )
        required: list[str] = []
        items = self.sequence(fields["requiredAuthentications"], f"{path}.requiredAuthentications")
        for index, item in enumerate(items or []):
            ref = self.reference(
                item, f"{path}.requiredAuthentications[{index}]", "authentication", authentications
            )
            if ref is not None:
                required.append(ref)
        if items is not None and not items:
            self.problem(
                fields["requiredAuthentications"],
                f"{path}.requiredAuthentications",
                "the list is empty; name at least one authentication "
                "(an authentication with `unauthenticated: true` allows anyone)",
            )
        if name is None or len(self.problems) > before:
            return None
        return AuthorizationPolicySpec(
            name=name,
            target_server=target_server,
            target_route=target_route,
            required=tuple(required),
        )
