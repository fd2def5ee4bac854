"""SPIFFE IDs: the names workloads carry in their certificates' URI SAN.

Tulle's form is `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
Parsing is strict (lower-case trust domain, DNS-label-like segments) because an
identity is compared byte for byte during authorization: two spellings of one
name must not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME = "spiffe://"
# A trust domain is a DNS-like name; SPIFFE allows only these characters.
_TRUST_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,253}[a-z0-9])?$")
# Kubernetes namespaces and service accounts are DNS subdomains/labels.
_SEGMENT = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


class InvalidSpiffeId(ValueError):
    """A string that is not a Tulle SPIFFE ID; the message says which part is wrong."""


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    service_account: str

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri


def validate_trust_domain(trust_domain: str) -> str:
    if not _TRUST_DOMAIN.match(trust_domain):
        raise InvalidSpiffeId(
            f"trust domain {trust_domain!r} is not a lower-case DNS-like name "
            "(letters, digits, '.', '-', '_')"
        )
    return trust_domain


def parse_spiffe_id(text: str) -> SpiffeId:
    """Parse `spiffe://td/ns/<ns>/sa/<sa>`; raises `InvalidSpiffeId` with the reason."""
    if not text.startswith(SCHEME):
        raise InvalidSpiffeId(f"identity {text!r} must start with {SCHEME!r}")
    trust_domain, _, path = text[len(SCHEME) :].partition("/")
    validate_trust_domain(trust_domain)
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
        raise InvalidSpiffeId(
            f"identity {text!r} must have the path /ns/<namespace>/sa/<service-account>"
        )
    return SpiffeId(trust_domain, _segment(parts[1], "namespace"), _segment(parts[3], "sa"))


def resolve_identity(text: str, trust_domain: str) -> SpiffeId:
    """Accept a full SPIFFE ID or the short `ns/sa` form within `trust_domain`."""
    if text.startswith(SCHEME):
        return parse_spiffe_id(text)
    namespace, sep, service_account = text.partition("/")
    if not sep or "/" in service_account:
        raise InvalidSpiffeId(
            f"identity {text!r} must be a SPIFFE ID or <namespace>/<service-account>"
        )
    return SpiffeId(
        validate_trust_domain(trust_domain),
        _segment(namespace, "namespace"),
        _segment(service_account, "service account"),
    )


def _segment(value: str, what: str) -> str:
    if not _SEGMENT.match(value):
        raise InvalidSpiffeId(
            f"{what} {value!r} must be lower-case letters, digits, '.' or '-', "
            "starting and ending with a letter or digit"
        )
    return value
