"""A small typed parser for the Prometheus text exposition format (0.0.4).

The metrics API reads every proxy's `/metrics` every couple of seconds. The
proxies write a narrow, regular subset of the format, but the parser accepts
the whole of it (HELP/TYPE comments, escaped label values, `NaN`/`+Inf`,
optional timestamps) so that a page from any exporter can be read. It is a
hand-written parser rather than `prometheus_client.parser` because that
package is only a development dependency and the job is forty lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Labels  # sorted by label name, so equal label sets compare equal
    value: float

    def label(self, name: str, default: str = "") -> str:
        for key, value in self.labels:
            if key == name:
                return value
        return default


class ParseError(ValueError):
    """A line that is not valid exposition text; says which line."""


_ESCAPES = {"\\": "\\", "n": "\n", '"': '"'}


def _parse_value(text: str, lineno: int) -> float:
    lowered = text.lower()
    if lowered in ("+inf", "inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    if lowered == "nan":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ParseError(f"line {lineno}: bad sample value {text!r}") from None


def _parse_labels(line: str, start: int, lineno: int) -> tuple[Labels, int]:
    """Parse `{k="v",...}` from `line[start] == "{"`; returns labels and the index after `}`."""
    labels: list[tuple[str, str]] = []
    i = start + 1
    n = len(line)
    while True:
        while i < n and line[i] in " \t,":
            i += 1
        if i >= n:
            raise ParseError(f"line {lineno}: unterminated label set")
        if line[i] == "}":
            return tuple(sorted(labels)), i + 1
        eq = line.find("=", i)
        if eq < 0:
            raise ParseError(f"line {lineno}: label without '='")
        key = line[i:eq].strip()
        i = eq + 1
        while i < n and line[i] == " ":
            i += 1
        if i >= n or line[i] != '"':
            raise ParseError(f"line {lineno}: label {key!r} value is not quoted")
        i += 1
        value: list[str] = []
        while True:
            if i >= n:
                raise ParseError(f"line {lineno}: unterminated label value of {key!r}")
            char = line[i]
            if char == "\\" and i + 1 < n:
                value.append(_ESCAPES.get(line[i + 1], "\\" + line[i + 1]))
                i += 2
            elif char == '"':
                i += 1
                break
            else:
                value.append(char)
                i += 1
        labels.append((key, "".join(value)))


def parse(text: str) -> list[Sample]:
    """Every sample of an exposition page, in order; raises ParseError on a bad line."""
    samples: list[Sample] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace >= 0 and (space < 0 or brace < space):
            name = line[:brace]
            labels, end = _parse_labels(line, brace, lineno)
            rest = line[end:].split()
        else:
            name, _, tail = line.partition(" ")
            labels = ()
            rest = tail.split()
        if not name or not rest:
            raise ParseError(f"line {lineno}: expected 'name[{{labels}}] value'")
        samples.append(Sample(name, labels, _parse_value(rest[0], lineno)))
    return samples
