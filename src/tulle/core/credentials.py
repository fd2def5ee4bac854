"""Bearer credentials for the mesh's HTTP control surfaces, and the request checks
that go with them (docs/api.md, "Credentials").

Who uses it: the control plane's HTTP API (`POST /api/apply`, `/api/tap`,
`/api/top`), each proxy's admin listener (`POST /shutdown`, `/tap`), `tulle up`
(which makes the tokens) and the CLI (which sends them).

- A token is 32 random bytes, URL-safe base64, kept in a file of mode 0600
  that is created atomically (`O_EXCL`) or read back, so two processes that
  race to create it agree on one token.
- `token_matches` compares in constant time (`hmac.compare_digest`).
- `host_allowed` is the DNS-rebinding check: a browser tricked into sending a
  request to loopback still sends the attacker's *name* as `Host`, so a
  server answers only to IP literals, `localhost`, and names it was told.
- `origin_allowed` is the cross-site check: a browser's `Origin` must be the
  server's own (`http://` + its `Host`); non-browser clients send none.

Loopback alone is not a credential: an ingress, a sidecar or any local
process reaches loopback too.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import os
import secrets
import stat
from collections.abc import Collection
from pathlib import Path

TOKEN_BYTES = 32
# Longer than any token we make; a token file is read whole, so it is bounded.
MAX_TOKEN_FILE_BYTES = 4096


class CredentialError(Exception):
    """A token file that cannot be made or used; the message says what to do."""


def generate_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).decode().rstrip("=")


def read_token_file(path: Path) -> str:
    """The token in `path`; raises CredentialError (missing, empty, or readable by others)."""
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise CredentialError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialError(
            f"the token file {path} is open to other users (mode {stat.S_IMODE(mode):04o}); "
            f"`chmod 600 {path}`"
        )
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise CredentialError(f"the token file {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes")
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise CredentialError(f"the token file {path} is not ASCII text") from None
    if not token or any(c.isspace() for c in token):
        raise CredentialError(f"the token file {path} must hold one token on one line")
    return token


def ensure_token_file(path: Path) -> str:
    """The token in `path`, made (mode 0600, parent directories 0700) if there is none yet."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = generate_token()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token_file(path)
    except OSError as exc:
        raise CredentialError(
            f"cannot create the token file {path}: {exc.strerror or exc}"
        ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time: the time taken says nothing about how much of a guess was right."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def _host_name(host: str) -> str | None:
    """The name or address of a `Host` value without its port; None if malformed."""
    host = host.strip()
    if host.startswith("["):
        name, sep, rest = host[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return name
    name, sep, port = host.rpartition(":")
    if not sep:
        return host
    if not port.isdigit():
        return None
    return name


def host_allowed(host: str | None, names: Collection[str] = ()) -> bool:
    """Whether a request's `Host` may reach this server: absent (not a browser), an IP
    address, `localhost`, or one of `names` (compared without case, port ignored)."""
    if host is None:
        return True
    name = _host_name(host)
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    name = name.lower().rstrip(".")
    return name == "localhost" or name in {n.lower().rstrip(".") for n in names}


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """Whether a request's `Origin` is this server's own page (or absent: not a browser)."""
    if origin is None:
        return True
    if host is None:
        return False
    scheme, sep, rest = origin.strip().partition("://")
    if not sep or scheme.lower() not in ("http", "https") or "/" in rest:
        return False

    def without_default_port(value: str, default: str) -> str:
        value = value.lower()
        return value[: -len(default)] if value.endswith(default) else value

    default = ":443" if scheme.lower() == "https" else ":80"
    return without_default_port(rest, default) == without_default_port(host.strip(), default)
