"""Reading HTTP route matches (path, method, headers): shared by services' routes and policy."""

from __future__ import annotations

import re

from yaml.nodes import Node, ScalarNode

from tulle.control.manifest.reader import _NULL, Reader, _describe
from tulle.core.discovery import HeaderMatch, RouteMatch

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")

_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class MatchReader(Reader):
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
