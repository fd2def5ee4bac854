"""Request-path normalisation: the one path that policy, routing and the app all see.

A proxy that authorizes `/public/../admin` as `/public` and forwards it
unchanged lets the app, which resolves the dot segments, serve `/admin`. So
every request target is normalised once, when its head arrives (HTTP/1 and
HTTP/2 alike), and that one result is what the authorization policy matches,
what service-profile routes match, and what is forwarded. A target whose
meaning apps disagree on is refused instead (400, `tulle-proxy-error:
bad-path`). docs/policy.md states the rule for operators.

The rule, RFC 3986 section 6.2.2 plus what Envoy's `normalize_path`,
`merge_slashes` and `path_with_escaped_slashes_action: REJECT_REQUEST` do:

1. The query (from the first `?`) is kept byte for byte; only the path is
   normalised. A fragment (`#`) has no place in a request (RFC 9112 3.2):
   refused.
2. Percent-encoding (6.2.2.2): an escape of an unreserved character
   (`A-Z a-z 0-9 - . _ ~`) is decoded (`%2e` is `.`, `%41` is `A`); every
   other escape is kept with upper-case hex (`%3f` becomes `%3F`). Refused:
   a `%` not followed by two hex digits, `%2F` and `%5C` (an encoded `/` or
   `\\`: one app splits there, another does not), `%00`, and a path whose
   bytes, escapes decoded, are not valid UTF-8 (overlong forms such as
   `%C0%AE`, which lax decoders turn into `.`).
3. A raw backslash is refused: it is not allowed in a URI, and some
   servers treat it as `/`.
4. Empty segments are merged (`//` is `/`, as nginx's `merge_slashes`), then
   dot segments are removed (6.2.2.3, the algorithm of 5.2.4): `.` goes,
   `..` removes the segment before it and never climbs above the root. A dot
   segment with parameters (`..;x`) is refused: servlet containers strip
   the parameters and then resolve it.
5. The target must be origin-form (`/...`) or `*`; anything else is refused
   (the HTTP/1 proxy turns absolute-form into origin-form before this).

Speed. Almost every real path needs none of this: a target that is ASCII and
contains no `%`, `\\`, `#`, `//` or `/.` is returned as the same object,
after one regular-expression scan done in C, and a target already seen
normal (traffic repeats its paths) skips even that: one set probe. Only the
rest take the slow path. The function is total: it never raises, it answers
None to refuse.
"""

from __future__ import annotations

import re
from typing import Final

# Anything that may need work: one scan in C. (Five `b"%" not in target` tests
# cost more: in CPython 3.11 each one raises and clears an internal TypeError
# before searching.)
_needs_work: Final = re.compile(rb"[%\\#\x80-\xff]|/[./]").search
# Bytes that may be decoded from an escape (RFC 3986 2.3).
_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
# Escapes refused whatever their position: encoded separators and NUL.
_REFUSED_ESCAPES: Final = frozenset({0x2F, 0x5C, 0x00})
_HEX_DIGITS: Final = b"0123456789abcdefABCDEF"
# Every two-digit hex pair, either case, to its value.
_HEX_PAIRS: Final[dict[bytes, int]] = {
    bytes((a, b)): int(bytes((a, b)), 16) for a in _HEX_DIGITS for b in _HEX_DIGITS
}


# Targets already found normal. Traffic repeats its paths, and a set probe
# costs a tenth of the regular-expression scan (which grows with the length);
# a miss costs one insertion. Bounded against a client sending endless distinct
# targets: short ones only, and emptied when full (no per-entry bookkeeping).
_known_normal: Final[set[bytes]] = set()
_KNOWN_MAX: Final = 1024
_KNOWN_MAX_LEN: Final = 256


def normalize_target(target: bytes) -> bytes | None:
    """The request target with its path normalised, or None when it must be refused.

    Returns `target` itself when it is already normal (the common case: no
    copy). Idempotent: a normalised target comes back unchanged.
    """
    if target in _known_normal:
        return target
    if _needs_work(target) is None:
        if target[:1] == b"/":
            if len(target) <= _KNOWN_MAX_LEN:
                if len(_known_normal) >= _KNOWN_MAX:
                    _known_normal.clear()
                _known_normal.add(target)
            return target
        return target if target == b"*" else None
    return _normalize(target)[0]


def origin_form(target: bytes) -> bytes:
    """An absolute-form target (`http://host/p?q`, RFC 9112 3.2.2) as origin-form
    (`/p?q`); any other target unchanged. A server must accept absolute-form, and
    the path inside it is what the app will serve, so it is what gets normalised."""
    lower = target[:8].lower()
    if lower.startswith(b"http://"):
        rest = target[7:]
    elif lower == b"https://":
        rest = target[8:]
    else:
        return target
    cut = len(rest)
    for mark in (b"/", b"?", b"#"):
        at = rest.find(mark)
        if 0 <= at < cut:
            cut = at
    path = rest[cut:]
    return path if path[:1] == b"/" else b"/" + path


def refusal_reason(target: bytes) -> str:
    """Why `normalize_target` refuses `target` ("" if it does not): for the error body."""
    return _normalize(target)[1]


def _normalize(target: bytes) -> tuple[bytes | None, str]:
    if b"#" in target:
        return None, "a request target cannot carry a fragment ('#')"
    query_at = target.find(b"?")
    path = target if query_at < 0 else target[:query_at]
    if path[:1] != b"/":
        if target == b"*":
            return target, ""
        return None, "the request target is not a path starting with '/'"
    if b"\\" in path:
        return None, "a backslash in the path is ambiguous"
    normal = path
    if b"%" in normal:
        decoded, problem = _decode_unreserved(normal)
        if decoded is None:
            return None, problem
        normal = decoded
    elif not normal.isascii() and not _is_utf8(normal):
        return None, "the path is not valid UTF-8"
    if b"//" in normal or b"/." in normal:
        merged, problem = _remove_dot_segments(normal)
        if merged is None:
            return None, problem
        normal = merged
    if normal == path:
        return target, ""
    return (normal if query_at < 0 else normal + target[query_at:]), ""


def _decode_unreserved(path: bytes) -> tuple[bytes | None, str]:
    """Decode escapes of unreserved bytes, upper-case the others, refuse the ambiguous."""
    pieces = path.split(b"%")
    out = [pieces[0]]
    # Every byte of the path with all escapes decoded, to check UTF-8 once.
    raw = [pieces[0]]
    high = not pieces[0].isascii()
    for piece in pieces[1:]:
        value = _HEX_PAIRS.get(piece[:2])
        if value is None:
            return None, "a '%' not followed by two hex digits"
        if value in _REFUSED_ESCAPES:
            return None, f"the escape %{value:02X} (an encoded separator or NUL) is ambiguous"
        rest = piece[2:]
        if value in _UNRESERVED:
            out.append(bytes((value,)))
        else:
            out.append(b"%" + piece[:2].upper())
            if value >= 0x80:
                high = True
        out.append(rest)
        raw.append(bytes((value,)))
        raw.append(rest)
        if not high and not rest.isascii():
            high = True
    if high and not _is_utf8(b"".join(raw)):
        return None, "the path, escapes decoded, is not valid UTF-8"
    return b"".join(out), ""


def _is_utf8(data: bytes) -> bool:
    # Strict: overlong forms, surrogates and truncated sequences are invalid.
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _remove_dot_segments(path: bytes) -> tuple[bytes | None, str]:
    """Merge empty segments and resolve `.` and `..` (RFC 3986 5.2.4); `path` starts with '/'."""
    segments = path.split(b"/")
    kept: list[bytes] = []
    for segment in segments[1:]:
        if not segment or segment == b".":
            continue
        if segment == b"..":
            if kept:
                kept.pop()
            continue
        if segment[:1] == b"." and (segment[:2] == b".;" or segment[:3] == b"..;"):
            return None, "a dot segment with parameters (';') is ambiguous"
        kept.append(segment)
    last = segments[-1]
    # "/a/", "/a/." and "/a/b/.." all name a directory: keep the trailing slash.
    trailing = bool(kept) and (not last or last == b"." or last == b"..")
    return b"/" + b"/".join(kept) + (b"/" if trailing else b""), ""
