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
import ipaddress
import re
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
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
from tulle.core.policy import (
    EMPTY_POLICY,
    MODES,
    Authentication,
    AuthorizationPolicySpec,
    HttpRouteSpec,
    NetworkRule,
    PolicySpec,
    ServerSpec,
    WorkloadPolicySpec,
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
_DURATION_PART_RE = re.compile(r"(\d+)(?:\.(\d+))?(h|ms|m|s)")
_DURATION_UNITS_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
# Durations are whole milliseconds up to a day: what a route timeout or a
# retry window can mean. Beyond that a value is a typo (or an attack on the
# float conversion), not a setting.
MAX_DURATION_MS = 24 * 3_600_000
_MAX_DURATION_TEXT = 64
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")

# Bounds on what reading a manifest may cost (the file, `POST /api/apply`,
# `tulle manifest validate`, the file watcher): a manifest of a thousand
# services is far below each of them.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# Values that aliases may add to what the text spells out.
MAX_ALIAS_NODES = 100_000
MAX_NESTING = 64
MAX_PARSE_SECONDS = 10.0
# What YAML 1.1 calls printable, minus nothing: C0 controls but tab, LF and
# CR, DEL, C1 controls but NEL, surrogates and U+FFFE/U+FFFF are refused.
_FORBIDDEN_CHARACTER = re.compile(
    "[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)

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
    # The `policy:` section as written (for tools that merge documents).
    policy: Mapping[str, Any] | None = None
    source: str = "mesh.yaml"
    # Used by `tulle up` only; the control plane ignores it.
    ingress: IngressSpec | None = None
    # The `policy:` section validated: what the Policy service serves.
    authorization: PolicySpec = EMPTY_POLICY


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
    return parse_manifest(read_manifest_bytes(path), source=source)


def read_manifest_bytes(path: str | Path) -> bytes:
    """The bytes of a manifest file, at most MAX_MANIFEST_BYTES; raises ManifestError.

    Reads one byte past the limit instead of the whole file, so that
    `/dev/zero` or a runaway generated file is refused at once.
    """
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ManifestError(
            [Problem(source, None, "", f"cannot read the file: {reason}")]
        ) from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError([_too_large(source)])
    return data


def _too_large(source: str) -> Problem:
    return Problem(
        source, None, "", f"the manifest is larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MiB"
    )


def decode_manifest(data: str | bytes, source: str) -> str:
    """Manifest bytes as text: UTF-8, no control characters; raises ManifestError with the line.

    YAML's own reader reports these by character offset; a user wants FILE:LINE.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError([_too_large(source)])
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            raise ManifestError(
                [
                    Problem(
                        source,
                        line,
                        "",
                        f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column {column}",
                    )
                ]
            ) from None
    else:
        text = data
    bad = _FORBIDDEN_CHARACTER.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise ManifestError(
            [
                Problem(
                    source,
                    line,
                    "",
                    f"character U+{ord(bad.group()):04X} at column {column} is not allowed "
                    "in YAML (control characters and NUL are not text)",
                )
            ]
        )
    return text


def compose_bounded(text: str, source: str) -> Node | None:
    """The YAML node tree of `text`, refusing what would cost more than a manifest may.

    A first pass over the parser's events (libyaml: iterative, linear) bounds
    the nesting depth (the composer recurses: 40,000 `[` crash the process),
    what aliases add to the values the text spells out ("billion laughs": a
    few hundred bytes that stand for 10^9 values, each of which validation
    would visit), aliases that contain themselves, and the wall-clock time;
    only then is the tree composed.
    Raises ManifestError with the line where a limit was hit.
    """
    started = time.monotonic()
    anchors: dict[str, int] = {}
    open_anchors: set[str] = set()
    # One frame per open collection: [expanded nodes so far, its anchor].
    stack: list[list[Any]] = [[0, None]]
    events = 0
    # Values written out in the text; what aliases add on top is bounded.
    written = 0

    def refuse(event: yaml.Event, message: str) -> ManifestError:
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        return ManifestError([Problem(source, line, "", message)])

    try:
        for event in yaml.parse(text, Loader=_Loader):
            events += 1
            if events % 4096 == 0 and time.monotonic() - started > MAX_PARSE_SECONDS:
                raise refuse(
                    event, f"the manifest took longer than {MAX_PARSE_SECONDS:g} s to parse"
                )
            if isinstance(event, yaml.AliasEvent):
                alias = str(event.anchor)
                if alias in open_anchors:
                    raise refuse(event, f"alias *{alias} refers to a node that contains it")
                stack[-1][0] += anchors.get(alias, 1)
            elif isinstance(event, yaml.ScalarEvent):
                stack[-1][0] += 1
                if event.anchor is not None:
                    anchors[str(event.anchor)] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                if len(stack) > MAX_NESTING:
                    raise refuse(event, f"nested deeper than {MAX_NESTING} levels")
                opened = None if event.anchor is None else str(event.anchor)
                if opened is not None:
                    open_anchors.add(opened)
                stack.append([1, opened])
            elif isinstance(event, yaml.CollectionEndEvent) and len(stack) > 1:
                size, closed = stack.pop()
                if closed is not None:
                    open_anchors.discard(closed)
                    anchors[closed] = size
                stack[-1][0] += size
            else:
                continue
            written += not isinstance(event, yaml.CollectionEndEvent | yaml.AliasEvent)
            if sum(frame[0] for frame in stack) - written > MAX_ALIAS_NODES:
                raise refuse(
                    event,
                    f"aliases expand to more than {MAX_ALIAS_NODES} values "
                    "(each use of an alias counts its whole anchored value)",
                )
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "invalid YAML"
        raise ManifestError([Problem(source, line, "", f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Problem(source, None, "", f"YAML error: {exc}")]) from None


def load_document(data: str | bytes, source: str) -> tuple[Node | None, Any]:
    """(node tree, plain Python value) of a YAML document, within the manifest's bounds.

    For code that edits a manifest as data (`POST /api/apply`, `tulle up`):
    the same limits as validation; raises ManifestError.
    """
    root = compose_bounded(decode_manifest(data, source), source)
    if root is None:
        return None, None
    try:
        return root, yaml.constructor.SafeConstructor().construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "invalid YAML"
        raise ManifestError([Problem(source, line, "", f"YAML error: {what}")]) from None


def parse_manifest(text: str | bytes, *, source: str = "mesh.yaml") -> Manifest:
    """Validate manifest text and convert it; raises ManifestError listing every problem."""
    root = compose_bounded(decode_manifest(text, source), source)
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


def duration_ms(text: str) -> int | str:
    """A Gateway API duration ("500ms", "2s", "1m30s", "1.5s") in whole milliseconds,
    or why it is not one (a sentence for a message that names the field).

    Computed exactly in integers, so "99999999999999999999h" is refused as too
    long and "0.0000001ms" as finer than a millisecond instead of turning into
    a float the proxy would choke on.
    """
    if len(text) > _MAX_DURATION_TEXT or not _DURATION_RE.match(text):
        return f'expected a duration like "500ms" or "2s", got "{text[:_MAX_DURATION_TEXT]}"'
    total = Fraction(0)
    for whole, fraction, unit in _DURATION_PART_RE.findall(text):
        value = Fraction(int(whole)) + (
            Fraction(int(fraction), 10 ** len(fraction)) if fraction else 0
        )
        total += value * _DURATION_UNITS_MS[unit]
        if total > MAX_DURATION_MS:
            return f'must be at most 24h, got "{text}"'
    if total.denominator != 1:
        return f'must be a whole number of milliseconds, got "{text}"'
    return int(total)


def parse_duration(text: str) -> float | None:
    """Gateway API duration ("500ms", "2s", "1m30s", "1h") in seconds; None if invalid."""
    milliseconds = duration_ms(text)
    return None if isinstance(milliseconds, str) else milliseconds / 1000


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
        if not isinstance(node, ScalarNode) or node.tag != _STR:
            self.problem(
                node, path, f'expected a duration like "500ms" or "2s", got {_describe(node)}'
            )
            return None
        milliseconds = duration_ms(str(node.value))
        if isinstance(milliseconds, str):
            self.problem(node, path, milliseconds)
            return None
        if milliseconds <= 0:
            self.problem(node, path, "must be longer than zero")
            return None
        return milliseconds / 1000

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

    def protocol(self, fields: Mapping[str, Node], path: str) -> str:
        """`protocol:` of a service or server: one of PROTOCOLS, http/1.1 when absent."""
        if "protocol" not in fields:
            return "http/1.1"
        text = self.string(fields["protocol"], f"{path}.protocol")
        if text is not None and text not in PROTOCOLS:
            self.problem(
                fields["protocol"],
                f"{path}.protocol",
                f'expected one of {", ".join(PROTOCOLS)}, got "{text}"',
            )
            return "http/1.1"
        return text if text is not None else "http/1.1"

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
        authorization = EMPTY_POLICY
        if policy is not None:
            authorization = self.policy_section(fields["policy"], services) or EMPTY_POLICY
        return Manifest(
            services=services,
            policy=policy,
            source=self.source,
            ingress=ingress,
            authorization=authorization,
        )

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

    # -- the `policy:` section (docs/policy.md) ----------------------------

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
        if len(self.problems) > before:
            return None
        return PolicySpec(
            default_mode=mode,
            workloads=tuple(w for w, _ in workloads.values()),
            servers=tuple(s for s, _ in servers.values()),
            authentications=tuple(a for a, _ in authentications.values()),
            http_routes=tuple(r for r, _ in routes.values()),
            authorization_policies=tuple(p for p, _ in policies.values()),
        )

    def unique(
        self,
        node: Node | None,
        path: str,
        convert: Callable[[Node, str], T | None],
    ) -> dict[str, tuple[T, Node]]:
        """A list of named resources, by name; a repeated name is an error."""
        found: dict[str, tuple[T, Node]] = {}
        if node is None:
            return found
        for index, item in enumerate(self.sequence(node, path) or []):
            item_path = f"{path}[{index}]"
            converted = convert(item, item_path)
            if converted is None:
                continue
            name = str(getattr(converted, "name", ""))
            if name in found:
                first = _line(found[name][1])
                self.problem(
                    item, f"{item_path}.name", f'duplicate name "{name}" (first on line {first})'
                )
                continue
            found[name] = (converted, item)
        return found

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
            node, path, ("name", "identities", "networks", "unauthenticated"), required=("name",)
        )
        if fields is None or "name" not in fields:
            return None
        before = len(self.problems)
        name = self.name(fields["name"], f"{path}.name")
        kinds = [k for k in ("identities", "networks", "unauthenticated") if k in fields]
        if len(kinds) != 1:
            self.problem(
                node,
                path,
                "give exactly one of identities, networks or unauthenticated: true"
                + (f" (got {', '.join(kinds)})" if kinds else ""),
            )
            return None
        identities: list[str] = []
        networks: list[NetworkRule] = []
        if "identities" in fields:
            items = self.sequence(fields["identities"], f"{path}.identities") or []
            for index, item in enumerate(items):
                identity = self.identity_pattern(item, f"{path}.identities[{index}]")
                if identity is not None:
                    identities.append(identity)
            if not items:
                self.problem(fields["identities"], f"{path}.identities", "the list is empty")
        if "networks" in fields:
            items = self.sequence(fields["networks"], f"{path}.networks") or []
            for index, item in enumerate(items):
                rule = self.network_rule(item, f"{path}.networks[{index}]")
                if rule is not None:
                    networks.append(rule)
            if not items:
                self.problem(fields["networks"], f"{path}.networks", "the list is empty")
        if "unauthenticated" in fields:
            flag = self.boolean(fields["unauthenticated"], f"{path}.unauthenticated")
            if flag is False:
                self.problem(
                    fields["unauthenticated"],
                    f"{path}.unauthenticated",
                    "only `unauthenticated: true` means something; drop the authentication",
                )
        if name is None or len(self.problems) > before:
            return None
        return Authentication(
            name=name,
            identities=tuple(identities),
            networks=tuple(networks),
            unauthenticated="unauthenticated" in fields,
        )

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

    def reference(self, node: Node, path: str, kind: str, known: set[str]) -> str | None:
        name = self.name(node, path)
        if name is not None and name not in known:
            listed = ", ".join(sorted(known)) or "none"
            self.problem(node, path, f'no {kind} named "{name}" ({kind}s: {listed})')
            return None
        return name
