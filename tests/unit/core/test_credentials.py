"""Bearer tokens and the Host/Origin checks of the mesh's HTTP control surfaces."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tulle.core.credentials import (
    CredentialError,
    bearer,
    ensure_token_file,
    host_allowed,
    origin_allowed,
    read_token_file,
    token_matches,
)


def test_a_token_file_is_created_private_and_then_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "api-token"
    token = ensure_token_file(path)
    assert len(token) >= 43
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ensure_token_file(path) == token
    assert read_token_file(path) == token
    assert ensure_token_file(tmp_path / "other") != token


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    ensure_token_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(CredentialError, match=r"open to other users \(mode 0644\); `chmod 600"):
        read_token_file(path)


@pytest.mark.parametrize("content", [b"", b"\n", b"two tokens\n", b"\xff\xfe", b"x" * 5000])
def test_a_token_file_must_hold_one_token(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "api-token"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(CredentialError):
        read_token_file(path)


def test_a_missing_token_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="cannot read the token file"):
        read_token_file(tmp_path / "nope")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer(header: str | None, token: str | None) -> None:
    assert bearer(header) == token


def test_token_matches() -> None:
    assert token_matches("abc", "abc")
    assert not token_matches("abd", "abc")
    assert not token_matches("", "abc")
    assert not token_matches(None, "abc")
    assert not token_matches("abc", "")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        (None, True),
        ("127.0.0.1:8084", True),
        ("127.0.0.1", True),
        ("10.1.2.3:80", True),
        ("[::1]:8084", True),
        ("localhost:8084", True),
        ("LOCALHOST", True),
        ("dash.example:8084", True),
        ("attacker.example:8084", False),
        ("localhost.attacker.example", False),
        ("127.0.0.1.nip.io:8084", False),
        ("", False),
        ("[::1", False),
        ("[::1]x", False),
        ("localhost:http", False),
    ],
)
def test_host_allowed(host: str | None, allowed: bool) -> None:
    assert host_allowed(host, ("dash.example",)) is allowed


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "127.0.0.1:8084", True),
        ("http://127.0.0.1:8084", "127.0.0.1:8084", True),
        ("HTTP://LOCALHOST:8084", "localhost:8084", True),
        ("http://localhost", "localhost:80", True),
        ("http://attacker.example", "127.0.0.1:8084", False),
        ("http://127.0.0.1:9999", "127.0.0.1:8084", False),
        ("null", "127.0.0.1:8084", False),
        ("http://127.0.0.1:8084/path", "127.0.0.1:8084", False),
        ("http://127.0.0.1:8084", None, False),
        ("file://", "127.0.0.1:8084", False),
    ],
)
def test_origin_allowed(origin: str | None, host: str | None, allowed: bool) -> None:
    assert origin_allowed(origin, host) is allowed
