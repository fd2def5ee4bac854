"""The dialler's one error vocabulary (tulle.net.dial), without sockets."""

from __future__ import annotations

import errno
import ssl

import pytest

from tulle.net.dial import failure_of
from tulle.proxy.errors import ProxyError


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (TimeoutError(), "connect-timeout"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connect-refused"),
        (OSError(errno.EMFILE, "too many open files"), "descriptors-exhausted"),
        (ssl.SSLError(1, "bad certificate"), "tls-handshake-failed"),
        (OSError(errno.EHOSTUNREACH, "no route"), "connect-error"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "connect-error"),
    ],
)
def test_each_failure_has_one_reason_the_proxy_knows(exc: BaseException, reason: str) -> None:
    failed = failure_of(exc, "10.0.0.1:80")
    assert failed.reason == reason
    assert "10.0.0.1:80" in failed.message or reason == "descriptors-exhausted"
    # Every reason is a ProxyError, so each protocol maps it onto its wire.
    assert ProxyError.of(reason).reason == reason
