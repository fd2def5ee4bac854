"""The shared core of the manifest readers: generic shapes, each error naming its field.

A reader walks YAML *nodes* rather than loaded Python objects so that every
problem names both the field and the line it sits on. It records problems and
goes on, because a user fixing a file wants the full list. The schemas
(services.py, policy.py, and the local runner's in tulle.local.manifest) are
methods on subclasses of `Reader`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tulle.control.manifest.errors import Problem
from tulle.core.discovery import PROTOCOLS
from tulle.core.duration import DurationError, parse_duration

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_SPIFFE_RE = re.compile(r"^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+$")

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"

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


class Reader:
    """Converts what is valid and records what is not, each problem with its field and line."""

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
        try:
            return parse_duration(str(node.value), field=path)
        except DurationError as exc:
            self.problem(node, path, exc.reason)
            return None

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

    def reference(self, node: Node, path: str, kind: str, known: set[str]) -> str | None:
        name = self.name(node, path)
        if name is not None and name not in known:
            listed = ", ".join(sorted(known)) or "none"
            self.problem(node, path, f'no {kind} named "{name}" ({kind}s: {listed})')
            return None
        return name
