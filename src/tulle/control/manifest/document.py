"""A manifest file as a YAML node tree: read and parsed within bounds, errors as FILE:LINE.

Everything that reads manifest text (the file, `POST /api/apply`, `tulle
manifest validate`, the file watcher) goes through here, so one set of limits
holds for all of them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import Node

from tulle.control.manifest.errors import ManifestError, Problem

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


_Loader: type[yaml.SafeLoader] | type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
