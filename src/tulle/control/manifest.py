"""The local manifest (`mesh.yaml`): its format, validation and conversion.

The manifest is the embedded source of truth of the control plane: services,
their endpoints (or the instances `tulle up` starts), routes, timeouts, retries
and traffic splits. Its shape follows Gateway API HTTPRoute (matches, paths,
headers, durations) and Linkerd's ServiceProfile (retryBudget, retryable), so
that the same documents can later be served from Kubernetes resources.

Validation works on YAML *nodes* rather than on loaded Python objects so that
every problem names both the field and the line it sits on, e.g.
`mesh.yaml:14: services[2].routes[0].timeout: expected a duration like "500ms"
or "2s", got "fast"`. It collects every problem it can find in one pass rather
than stopping at the first, because a user fixing a file wants the full list.
The format is documented in docs/manifest.md; keep the two in step.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tulle.core.discovery import (
    Backend,
    Endpoint,
    HeaderMatch,
    Profile,
    RetryBudgetSpec,
    Route,
    RouteMatch,
    parse_address,
)

PROTOCOLS = ("http/1.1", "h2", "grpc", "opaque")
# What a client should expect the endpoints of a service to speak.
PROTOCOL_HINTS = {"http/1.1": "http/1.1", "h2": "h2", "grpc": "h2", "opaque": "opaque"}
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
COMMAND_PLACEHOLDERS = ("port", "replica")
DEFAULT_ENDPOINT_WEIGHT = 10_000
MAX_WEIGHT = 1_000_000

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_SPIFFE_RE = re.compile(r"^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_DURATION_RE = re.compile(r"^(?:\d+(?:\.\d+)?(?:h|ms|m|s))+$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"


# -- the model ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstancesSpec:
    """How `tulle up` runs a service locally. Validated here, used there."""

    # argv; a string in the manifest is split like a shell would (no shell runs).
    # May contain the placeholders {port} and {replica}.
    command: tuple[str, ...]
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    identity: str | None = None
    service_account: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    port: int | None
    protocol: str
    endpoints: tuple[Endpoint, ...]
    profile: Profile
    instances: InstancesSpec | None = None
    identity: str | None = None
    line: int = 0  # where the service starts in its file, for messages


@dataclass(frozen=True, slots=True)
class IngressSpec:
    """Where `tulle up` lets calls from outside the mesh in. Validated here, used there."""

    port: int | None = None  # None: `tulle up`'s default (or its --ingress-port)
    services: tuple[str, ...] | None = None  # None: every service
    line: int = 0


@dataclass(frozen=True, slots=True)
class Manifest:
    services: Mapping[str, ServiceSpec]
    # Reserved for the authorization-policy work: accepted as an opaque mapping.
    policy: Mapping[str, Any] | None = None
    source: str = "mesh.yaml"
    # Used by `tulle up` only; the control plane ignores it.
    ingress: IngressSpec | None = None


# -- errors ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    source: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ManifestError(Exception):
    """A manifest that cannot be used; `str()` lists every problem, one a line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# -- entry points ------------------------------------------------------------


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file; raises ManifestError (also for I/O errors)."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ManifestError(
            [Problem(source, None, "", f"cannot read the file: {reason}")]
        ) from None
    return parse_manifest(data, source=source)


def parse_manifest(text: str | bytes, *, source: str = "mesh.yaml") -> Manifest:
    """Validate manifest text and convert it; raises ManifestError listing every problem."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "invalid YAML"
        raise ManifestError([Problem(source, line, "", f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Problem(source, None, "", f"YAML error: {exc}")]) from None
    except UnicodeDecodeError:
        raise ManifestError([Problem(source, None, "", "the file is not UTF-8 text")]) from None
    reader = _Reader(source)
    manifest = reader.manifest(root)
    if reader.problems or manifest is None:
        # Sorted by line so that the list reads like the file.
        raise ManifestError(sorted(reader.problems, key=lambda p: p.line or 0))
    return manifest


_Loader: type[yaml.SafeLoader] | type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# -- validation --------------------------------------------------------------

T = TypeVar("T")


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, ScalarNode) and node.tag == _NULL:
        return "nothing"
    return f'"{node.value}"'


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def parse_duration(text: str) -> float | None:
    """Gateway API duration ("500ms", "2s", "1m30s", "1h") in seconds; None if invalid."""
    if not _DURATION_RE.match(text):
        return None
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART_RE.findall(text))


class _Reader:
    """Walks the node tree, converting what is valid and recording what is not."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        # Every well-formed service name, valid service or not, so that a
        # backend naming a broken service is not reported twice.
        self.declared: set[str] = set()
        self._constructor = yaml.constructor.SafeConstructor()

    def problem(self, node: Node | None, path: str, message: str) -> None:
        line = _line(node) if node is not None else None
        self.problems.append(Problem(self.source, line, path, message))

    # -- generic shapes --------------------------------------------------

    def mapping(
        self,
        node: Node,
        path: str,
        allowed: tuple[str, ...],
        required: tuple[str, ...] = (),
    ) -> dict[str, Node] | None:
        if not isinstance(node, MappingNode):
            self.problem(node, path, f"expected a mapping, got {_describe(node)}")
            return None
        fields: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key_path = f"{path}.{key_node.value}" if path else str(key_node.value)
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                self.problem(key_node, path or "(top level)", "keys must be plain strings")
                continue
            key = str(key_node.value)
            if key in fields:
                first = _line(fields[key])
                self.problem(key_node, key_path, f"duplicate key (first given on line {first})")
                continue
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f'; did you mean "{hint[0]}"?' if hint else ""
                known = ", ".join(allowed)
                self.problem(key_node, key_path, f"unknown field (known: {known}){suggestion}")
                continue
            fields[key] = value_node
        for key in required:
            if key not in fields:
                self.problem(node, path or "(top level)", f'missing required field "{key}"')
        return fields

    def sequence(self, node: Node, path: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.problem(node, path, f"expected a list, got {_describe(node)}")
            return None
        return list(node.value)

    def string(self, node: Node, path: str, *, what: str = "a string") -> str | None:
        if not isinstance(node, ScalarNode) or node.tag != _STR or node.value == "":
            self.problem(node, path, f"expected {what}, got {_describe(node)}")
            return None
        return str(node.value)

    def integer(self, node: Node, path: str, low: int, high: int) -> int | None:
        if not isinstance(node, ScalarNode) or node.tag != _INT:
            self.problem(node, path, f"expected a whole number, got {_describe(node)}")
            return None
        value = int(self._constructor.construct_object(node))
        if not low <= value <= high:
            self.problem(node, path, f"must be between {low} and {high}, got {value}")
            return None
        return value

    def number(self, node: Node, path: str, low: float, high: float) -> float | None:
        if not isinstance(node, ScalarNode) or node.tag not in (_INT, _FLOAT):
            self.problem(node, path, f"expected a number, got {_describe(node)}")
            return None
        value = float(self._constructor.construct_object(node))
        if not low <= value <= high:
            self.problem(node, path, f"must be between {low:g} and {high:g}, got {value:g}")
            return None
        return value

    def boolean(self, node: Node, path: str) -> bool | None:
        if not isinstance(node, ScalarNode) or node.tag != _BOOL:
            self.problem(node, path, f"expected true or false, got {_describe(node)}")
            return None
        return bool(self._constructor.construct_object(node))

    def duration(self, node: Node, path: str) -> float | None:
        seconds = None
        if isinstance(node, ScalarNode) and node.tag == _STR:
            seconds = parse_duration(str(node.value))
        if seconds is None:
            self.problem(
                node, path, f'expected a duration like "500ms" or "2s", got {_describe(node)}'
            )
            return None
        if seconds <= 0:
            self.problem(node, path, "must be longer than zero")
            return None
        return seconds

    def string_map(self, node: Node, path: str) -> dict[str, str] | None:
        """A mapping of names to scalar values; values keep their written text."""
        if not isinstance(node, MappingNode):
            self.problem(node, path, f"expected a mapping, got {_describe(node)}")
            return None
        result: dict[str, str] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.value == "":
                self.problem(key_node, path, "keys must be non-empty strings")
                continue
            key = str(key_node.value)
            if not isinstance(value_node, ScalarNode) or value_node.tag == _NULL:
                self.problem(
                    value_node, f"{path}.{key}", f"expected a value, got {_describe(value_node)}"
                )
                continue
            if key in result:
                self.problem(key_node, f"{path}.{key}", "duplicate key")
                continue
            result[key] = str(value_node.value)
        return result

    def items(
        self, node: Node, path: str, convert: Callable[[Node, str], T | None]
    ) -> list[T] | None:
        nodes = self.sequence(node, path)
        if nodes is None:
            return None
        converted = [convert(item, f"{path}[{i}]") for i, item in enumerate(nodes)]
        return [c for c in converted if c is not None]

    def name(self, node: Node, path: str) -> str | None:
        text = self.string(node, path, what="a name")
        if text is None:
            return None
        if len(text) > 253 or not _NAME_RE.match(text):
            lower = " (names are lower-case)" if text.lower() != text else ""
            self.problem(
                node,
                path,
                f'"{text}" is not a valid name: use lower-case letters, digits, "-" and "."{lower}',
            )
            return None
        return text

    def identity(self, node: Node, path: str) -> str | None:
        text = self.string(node, path, what="a SPIFFE ID")
        if text is None:
            return None
        if not _SPIFFE_RE.match(text):
            self.problem(
                node,
                path,
                f'expected a SPIFFE ID like "spiffe://tulle.local/ns/default/sa/web", got "{text}"',
            )
            return None
        return text

    # -- the document ----------------------------------------------------

    def manifest(self, root: Node | None) -> Manifest | None:
        if root is None:
            self.problem(None, "", "the manifest is empty; expected a top-level `services:` list")
            return None
        fields = self.mapping(root, "", ("services", "policy", "ingress"), required=("services",))
        if fields is None:
            return None
        policy: Mapping[str, Any] | None = None
        if "policy" in fields:
            policy_node = fields["policy"]
            if isinstance(policy_node, MappingNode):
                policy = dict(self._constructor.construct_object(policy_node, deep=True))
            elif not (isinstance(policy_node, ScalarNode) and policy_node.tag == _NULL):
                self.problem(
                    policy_node, "policy", f"expected a mapping, got {_describe(policy_node)}"
                )
        if "services" not in fields:
            return None
        services_node = fields["services"]
        if isinstance(services_node, ScalarNode) and services_node.tag == _NULL:
            service_nodes: list[Node] | None = []
        else:
            service_nodes = self.sequence(services_node, "services")
        if service_nodes is None:
            return None
        services: dict[str, ServiceSpec] = {}
        # Backends may name services declared later, so they are checked after.
        pending_backends: list[tuple[Node, str, str]] = []
        for index, node in enumerate(service_nodes):
            path = f"services[{index}]"
            spec = self.service(node, path, pending_backends)
            if spec is None:
                continue
            if spec.name in services:
                first = services[spec.name].line
                self.problem(
                    node, f"{path}.name", f'duplicate service "{spec.name}" (first on line {first})'
                )
                continue
            services[spec.name] = spec
        for node, path, backend in pending_backends:
            if backend not in self.declared:
                known = ", ".join(sorted(self.declared)) or "none"
                self.problem(node, path, f'no service named "{backend}" (services: {known})')
        ingress = self.ingress(fields["ingress"]) if "ingress" in fields else None
        return Manifest(services=services, policy=policy, source=self.source, ingress=ingress)

    def ingress(self, node: Node) -> IngressSpec | None:
        fields = self.mapping(node, "ingress", ("port", "services"))
        if fields is None:
            return None
        port = self.integer(fields["port"], "ingress.port", 1, 65535) if "port" in fields else None
        services: tuple[str, ...] | None = None
        if "services" in fields:
            names: list[str] = []
            for i, item in enumerate(self.sequence(fields["services"], "ingress.services") or []):
                name = self.name(item, f"ingress.services[{i}]")
                if name is not None and name not in self.declared:
                    known = ", ".join(sorted(self.declared)) or "none"
                    self.problem(
                        item,
                        f"ingress.services[{i}]",
                        f'no service named "{name}" (services: {known})',
                    )
                elif name is not None:
                    names.append(name)
            services = tuple(names)
        return IngressSpec(port=port, services=services, line=_line(node))

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
        protocol = "http/1.1"
        if "protocol" in fields:
            text = self.string(fields["protocol"], f"{path}.protocol")
            if text is not None and text not in PROTOCOLS:
                self.problem(
                    fields["protocol"],
                    f"{path}.protocol",
                    f'expected one of {", ".join(PROTOCOLS)}, got "{text}"',
                )
            elif text is not None:
                protocol = text
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
        instances = None
        if "instances" in fields:
            instances = self.instances(fields["instances"], f"{path}.instances")
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
            ),
            instances=instances,
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

    def instances(self, node: Node, path: str) -> InstancesSpec | None:
        fields = self.mapping(
            node,
            path,
            ("command", "replicas", "env", "identity", "serviceAccount"),
            required=("command",),
        )
        if fields is None or "command" not in fields:
            return None
        command = self.command(fields["command"], f"{path}.command")
        replicas = 1
        if "replicas" in fields:
            replicas = self.integer(fields["replicas"], f"{path}.replicas", 0, 1000) or 0
        env: dict[str, str] = {}
        if "env" in fields:
            env = self.string_map(fields["env"], f"{path}.env") or {}
        identity = None
        if "identity" in fields:
            identity = self.identity(fields["identity"], f"{path}.identity")
        account = None
        if "serviceAccount" in fields:
            account_node = fields["serviceAccount"]
            account = self.string(account_node, f"{path}.serviceAccount")
            if account is not None and not _LABEL_RE.match(account):
                self.problem(
                    account_node,
                    f"{path}.serviceAccount",
                    f'"{account}" is not a valid account name: use lower-case letters, '
                    'digits and "-"',
                )
                account = None
        if "identity" in fields and "serviceAccount" in fields:
            self.problem(
                fields["serviceAccount"],
                f"{path}.serviceAccount",
                "give either identity or serviceAccount, not both",
            )
            return None
        if command is None:
            return None
        return InstancesSpec(
            command=command,
            replicas=replicas,
            env=env,
            identity=identity,
            service_account=account,
        )

    def command(self, node: Node, path: str) -> tuple[str, ...] | None:
        if isinstance(node, SequenceNode):
            parts: list[str] = []
            for i, part in enumerate(node.value):
                # Numbers in argv (`--workers, 2`) are fine: they keep their text.
                if not isinstance(part, ScalarNode) or part.tag == _NULL or part.value == "":
                    self.problem(part, f"{path}[{i}]", f"expected a word, got {_describe(part)}")
                    return None
                parts.append(str(part.value))
        else:
            text = self.string(node, path, what="a command (a string or a list of words)")
            if text is None:
                return None
            try:
                parts = shlex.split(text)
            except ValueError as exc:
                self.problem(node, path, f"cannot split the command: {exc}")
                return None
        if not parts:
            self.problem(node, path, "the command is empty")
            return None
        for part in parts:
            for placeholder in _PLACEHOLDER_RE.findall(part):
                if placeholder not in COMMAND_PLACEHOLDERS:
                    known = ", ".join(f"{{{p}}}" for p in COMMAND_PLACEHOLDERS)
                    self.problem(
                        node, path, f'unknown placeholder "{{{placeholder}}}" (known: {known})'
                    )
                    return None
        return tuple(parts)

    def route(self, node: Node, path: str) -> Route | None:
        fields = self.mapping(
            node,
            path,
            ("name", "matches", "timeout", "timeouts", "retryable", "retry"),
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
        if "retry" in fields:
            retry = self.mapping(fields["retry"], f"{path}.retry", ("codes",))
            if retry is not None and "codes" in retry:
                statuses = (
                    self.items(
                        retry["codes"],
                        f"{path}.retry.codes",
                        lambda n, p: self.integer(n, p, 100, 599),
                    )
                    or []
                )
            if retryable is False:
                self.problem(
                    fields["retry"], f"{path}.retry", "the route says retryable: false; drop one"
                )
            elif retry is not None:
                retryable = True
        if name is None or len(self.problems) > before:
            return None
        return Route(
            name=name,
            matches=tuple(matches),
            timeout_s=timeout,
            retryable=retryable,
            retry_statuses=tuple(statuses),
        )

    def route_match(self, node: Node, path: str) -> RouteMatch | None:
        fields = self.mapping(node, path, ("path", "method", "headers"))
        if fields is None:
            return None
        before = len(self.problems)
        exact = prefix = regex = None
        if "path" in fields:
            path_fields = self.mapping(
                fields["path"], f"{path}.path", ("type", "value"), ("value",)
            )
            if path_fields is not None and "value" in path_fields:
                kind = "PathPrefix"
                if "type" in path_fields:
                    kind = self.string(path_fields["type"], f"{path}.path.type") or kind
                    if kind not in ("Exact", "PathPrefix", "RegularExpression"):
                        self.problem(
                            path_fields["type"],
                            f"{path}.path.type",
                            f'expected Exact, PathPrefix or RegularExpression, got "{kind}"',
                        )
                value_node = path_fields["value"]
                value = self.string(value_node, f"{path}.path.value", what="a path")
                if value is not None and kind == "RegularExpression":
                    regex = self.regex(value_node, f"{path}.path.value", value)
                elif value is not None and not value.startswith("/"):
                    self.problem(
                        value_node, f"{path}.path.value", f'a path starts with "/", got "{value}"'
                    )
                elif kind == "Exact":
                    exact = value
                elif kind == "PathPrefix":
                    prefix = value
        method = None
        if "method" in fields:
            method = self.string(fields["method"], f"{path}.method", what="an HTTP method")
            if method is not None and method not in HTTP_METHODS:
                self.problem(
                    fields["method"],
                    f"{path}.method",
                    f'expected one of {", ".join(HTTP_METHODS)}, got "{method}"',
                )
        headers: list[HeaderMatch] = []
        if "headers" in fields:
            headers = self.items(fields["headers"], f"{path}.headers", self.header_match) or []
        if len(self.problems) > before:
            return None
        return RouteMatch(
            path_exact=exact,
            path_prefix=prefix,
            path_regex=regex,
            method=method,
            headers=tuple(headers),
        )

    def header_match(self, node: Node, path: str) -> HeaderMatch | None:
        fields = self.mapping(node, path, ("name", "value", "type"), ("name", "value"))
        if fields is None or "name" not in fields or "value" not in fields:
            return None
        name = self.string(fields["name"], f"{path}.name", what="a header name")
        if name is not None and not _HEADER_NAME_RE.match(name):
            self.problem(fields["name"], f"{path}.name", f'"{name}" is not a valid header name')
            name = None
        kind = "Exact"
        if "type" in fields:
            kind = self.string(fields["type"], f"{path}.type") or kind
            if kind not in ("Exact", "RegularExpression"):
                self.problem(
                    fields["type"],
                    f"{path}.type",
                    f'expected Exact or RegularExpression, got "{kind}"',
                )
                return None
        value_node = fields["value"]
        if not isinstance(value_node, ScalarNode) or value_node.tag == _NULL:
            self.problem(
                value_node, f"{path}.value", f"expected a value, got {_describe(value_node)}"
            )
            return None
        value = str(value_node.value)
        if kind == "RegularExpression" and self.regex(value_node, f"{path}.value", value) is None:
            return None
        if name is None:
            return None
        return HeaderMatch(name=name.lower(), value=value, regex=kind == "RegularExpression")

    def regex(self, node: Node, path: str, pattern: str) -> str | None:
        try:
            re.compile(pattern)
        except re.error as exc:
            self.problem(node, path, f"invalid regular expression: {exc}")
            return None
        return pattern

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
