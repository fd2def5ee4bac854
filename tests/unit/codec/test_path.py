"""Unit and property tests for tulle.codec.path: one normalisation of the request path."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tulle.codec.path import normalize_target, origin_form, refusal_reason

# (what a client sends, what policy, routing and the app see)
NORMALISED = [
    # already normal: the same object comes back (checked below)
    (b"/", b"/"),
    (b"/public/x", b"/public/x"),
    (b"/public/x?a=/../b&c=%2f", b"/public/x?a=/../b&c=%2f"),  # the query is untouched
    (b"*", b"*"),
    (b"/.well-known/x", b"/.well-known/x"),
    (b"/a/.b/..c/c..", b"/a/.b/..c/c.."),
    # dot segments (RFC 3986 5.2.4)
    (b"/public/../admin", b"/admin"),
    (b"/public/./admin", b"/public/admin"),
    (b"/./admin", b"/admin"),
    (b"/../admin", b"/admin"),  # never above the root
    (b"/../../../admin", b"/admin"),
    (b"/public/..", b"/"),
    (b"/a/b/..", b"/a/"),
    (b"/a/b/.", b"/a/b/"),
    (b"/a/b/./", b"/a/b/"),
    (b"/public/../admin?x=1", b"/admin?x=1"),
    (b"/public/../admin?", b"/admin?"),
    # percent-encoded dots and unreserved characters
    (b"/public/%2e%2e/admin", b"/admin"),
    (b"/public/%2E%2E/admin", b"/admin"),
    (b"/public/.%2e/admin", b"/admin"),
    (b"/public/%2e/admin", b"/public/admin"),
    (b"/%61dmin", b"/admin"),
    (b"/%41%5a%7e%2d%5f", b"/AZ~-_"),
    (b"/a%3fb", b"/a%3Fb"),  # not unreserved: kept, upper-case hex
    (b"/a%3Fb", b"/a%3Fb"),
    (b"/caf%c3%a9", b"/caf%C3%A9"),  # UTF-8 escapes are kept
    (b"/%252e%252e/admin", b"/%252e%252e/admin"),  # %25 stays: no double decoding
    # doubled slashes
    (b"//admin", b"/admin"),
    (b"/public//admin", b"/public/admin"),
    (b"/public///", b"/public/"),
    (b"/public//../admin", b"/admin"),  # merged first, as nginx
    (b"/public/..//admin", b"/admin"),
    (b"/admin;x", b"/admin;x"),  # a parameter on an ordinary segment is kept
]

REFUSED = [
    b"/public/%2f../admin",
    b"/public%2F..%2Fadmin",
    b"/public/..%5cadmin",
    b"/public/..%5Cadmin",
    b"/public\\..\\admin",
    b"/public/..\\admin",
    b"/admin%00.html",
    b"/public/%",
    b"/public/%2",
    b"/public/%zz",
    b"/public/%%32%65%32%65/admin",  # a '%' that escapes nothing
    b"/public/%C0%AE%C0%AE/admin",  # overlong '.' (IIS-style)
    b"/public/%c0%ae./admin",
    b"/public/%e0%80%ae/admin",
    b"/caf%e9",  # not UTF-8
    b"/public/\xc0\xae\xc0\xae/admin",  # raw overlong bytes
    b"/public/..;/admin",  # servlet containers resolve this to /admin
    b"/public/.;x/admin",
    b"/public/%2e%2e;/admin",
    b"/public#/../admin",
    b"/public?x#y",
    b"http://books/admin",  # absolute-form reaches the normaliser only if not converted
    b"admin",
    b"",
    b"../admin",
]


@pytest.mark.parametrize(("target", "expected"), NORMALISED)
def test_normalised(target: bytes, expected: bytes) -> None:
    assert normalize_target(target) == expected
    assert refusal_reason(target) == ""
    # And once normal, it stays as it is.
    assert normalize_target(expected) == expected


@pytest.mark.parametrize("target", REFUSED)
def test_refused(target: bytes) -> None:
    assert normalize_target(target) is None
    assert refusal_reason(target)  # a reason for the 400's body


@pytest.mark.parametrize(
    "target", [b"/", b"/public/x", b"/api/v1/books?id=7&q=a/b", b"*", b"/a/b.c/.d"]
)
def test_a_normal_target_is_returned_without_a_copy(target: bytes) -> None:
    assert normalize_target(target) is target


def test_a_changed_path_keeps_its_query_bytes() -> None:
    target = b"/x/../y?a=%2e%2E&b=//c\\d"
    assert normalize_target(target) == b"/y?a=%2e%2E&b=//c\\d"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"http://books/public/../admin", b"/public/../admin"),
        (b"HTTPS://books:8443/a?b=1", b"/a?b=1"),
        (b"http://books", b"/"),
        (b"http://books?x=/y", b"/?x=/y"),
        (b"http://books#/../admin", b"/#/../admin"),  # then refused: a fragment
        (b"/already/origin", b"/already/origin"),
        (b"books:443", b"books:443"),  # authority-form (CONNECT) is not absolute-form
    ],
)
def test_origin_form(target: bytes, expected: bytes) -> None:
    assert origin_form(target) == expected


# -- properties ---------------------------------------------------------------------

# Pieces an attacker combines: separators, dots in every spelling, escapes of
# every kind, parameters, and ordinary names.
_PIECES = [
    b"/", b"//", b".", b"..", b"%2e", b"%2E", b"%2f", b"%5c", b"\\", b";", b"%3b", b"%41",
    b"%7E", b"%c3%a9", b"%C0%AE", b"%", b"%g1", b"a", b"admin", b"public", b"~", b"%25",
    b"?", b"#", b"\xc3\xa9", b"\xff",
]  # fmt: skip
targets = st.lists(st.sampled_from(_PIECES), max_size=14).map(lambda p: b"/" + b"".join(p))


def _app_view(target: bytes) -> bytes:
    """What a careful app (nginx-like) makes of a path: decode every escape, merge
    slashes, resolve dot segments."""
    path = target.split(b"?", 1)[0]
    decoded = unquote_to_bytes(path)
    kept: list[bytes] = []
    segments = decoded.split(b"/")
    for segment in segments[1:]:
        if segment in (b"", b"."):
            continue
        if segment == b"..":
            if kept:
                kept.pop()
            continue
        kept.append(segment)
    trailing = kept and segments[-1] in (b"", b".", b"..")
    return b"/" + b"/".join(kept) + (b"/" if trailing else b"")


@settings(max_examples=400, deadline=None)
@given(targets)
def test_normalisation_is_idempotent(target: bytes) -> None:
    once = normalize_target(target)
    if once is not None:
        assert normalize_target(once) == once


@settings(max_examples=400, deadline=None)
@given(targets)
def test_output_has_no_dot_segment_no_empty_segment_no_backslash(target: bytes) -> None:
    out = normalize_target(target)
    if out is None:
        return
    path = out.split(b"?", 1)[0]
    assert path.startswith(b"/")
    assert b"\\" not in path and b"#" not in out
    segments = path.split(b"/")[1:]
    # Only the last segment may be empty (a trailing slash), and only after a name.
    assert all(segments[:-1]), path
    decoded = unquote_to_bytes(path).split(b"/")[1:]
    # Decoding what the app receives never creates a separator or a dot segment.
    assert len(decoded) == len(segments)
    assert not any(s in (b".", b"..") for s in decoded), path


@settings(max_examples=400, deadline=None)
@given(targets)
def test_the_app_sees_what_the_proxy_matched(target: bytes) -> None:
    """The security property: whatever an app does with the forwarded path
    (decode it, normalise it again), it names what policy matched."""
    out = normalize_target(target)
    if out is None:
        return
    matched = out.split(b"?", 1)[0]
    assert _app_view(out) == unquote_to_bytes(matched)
    # And from the client's own bytes, an nginx-like app reaches the same place.
    assert _app_view(target) == unquote_to_bytes(matched)


@settings(max_examples=400, deadline=None)
@given(targets)
def test_escapes_left_are_upper_case_and_never_unreserved(target: bytes) -> None:
    out = normalize_target(target)
    if out is None:
        return
    pieces = out.split(b"?", 1)[0].split(b"%")[1:]
    for piece in pieces:
        pair = piece[:2]
        assert pair == pair.upper() and len(pair) == 2
        value = int(pair, 16)
        assert not (chr(value).isalnum() and value < 0x80) and chr(value) not in "-._~"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_answered_without_raising(target: bytes) -> None:
    out = normalize_target(target)
    assert out is None or out.startswith(b"/") or out == b"*"
    assert (out is None) == bool(refusal_reason(target))


def test_known_targets_are_remembered_bounded_and_only_when_normal() -> None:
    from tulle.codec import path

    path._known_normal.clear()
    assert normalize_target(b"/seen") == b"/seen"
    assert b"/seen" in path._known_normal
    # A second look answers the same from the set.
    assert normalize_target(b"/seen") == b"/seen"
    # Refused, rewritten and over-long targets are never remembered.
    assert normalize_target(b"/a/../b") == b"/b"
    assert normalize_target(b"x") is None
    long_target = b"/" + b"a" * path._KNOWN_MAX_LEN
    assert normalize_target(long_target) == long_target
    assert path._known_normal == {b"/seen"}
    # Endless distinct targets never grow it past its bound.
    for n in range(path._KNOWN_MAX * 2 + 5):
        assert normalize_target(b"/n%d" % n) == b"/n%d" % n
        assert len(path._known_normal) <= path._KNOWN_MAX
