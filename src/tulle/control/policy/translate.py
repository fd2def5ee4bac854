"""From the compiled model (`tulle.core.policy`) to Policy API messages.

Kept apart from the servicer so that the client's decoder
(`tulle.api.policy_client.policy_from_message`) can be tested against it
without a network: a round trip must give back an equal `InboundPolicy`.
"""

from __future__ import annotations

from tulle.api.proto import policy_pb2 as pb
from tulle.control.destination.translator import _match_message
from tulle.core.policy import (
    ALL_AUTHENTICATED,
    ALL_UNAUTHENTICATED,
    AUDIT,
    DENY,
    Authentication,
    Authorization,
    InboundPolicy,
    PolicyRoute,
)
from tulle.core.ratelimit import LimitSpec, RateLimitSpec

MODE_TO_WIRE: dict[str, pb.DefaultPolicy.ValueType] = {
    ALL_UNAUTHENTICATED: pb.DEFAULT_POLICY_ALL_UNAUTHENTICATED,
    ALL_AUTHENTICATED: pb.DEFAULT_POLICY_ALL_AUTHENTICATED,
    DENY: pb.DEFAULT_POLICY_DENY,
    AUDIT: pb.DEFAULT_POLICY_AUDIT,
}


def authentication_message(authentication: Authentication) -> pb.Authentication:
    message = pb.Authentication(name=authentication.name)
    jwt = authentication.jwt
    if jwt is not None:
        message.jwt.issuer = jwt.issuer
        message.jwt.audiences.extend(jwt.audiences)
        if jwt.jwks_url:
            message.jwt.jwks_url = jwt.jwks_url
        else:
            message.jwt.jwks_file = jwt.jwks_file
        message.jwt.clock_skew_s = jwt.clock_skew_s
        message.jwt.claims.extend(
            pb.ClaimRequirement(claim=name, values=list(values)) for name, values in jwt.claims
        )
        message.jwt.forward_claims.extend(
            pb.ForwardClaim(claim=claim, header=header) for claim, header in jwt.forward_claims
        )
    elif authentication.identities:
        message.mesh_tls.identities.extend(authentication.identities)
    elif authentication.networks:
        message.networks.rules.extend(
            pb.NetworkRule(cidr=rule.cidr, **{"except": list(rule.except_)})
            for rule in authentication.networks
        )
    else:
        message.unauthenticated.SetInParent()
    return message


def authorization_message(authorization: Authorization) -> pb.Authorization:
    return pb.Authorization(
        name=authorization.name,
        required=[authentication_message(a) for a in authorization.required],
    )


def _limit_message(limit: LimitSpec) -> pb.Limit:
    return pb.Limit(requests_per_second=limit.requests_per_second, burst=limit.burst)


def rate_limit_message(spec: RateLimitSpec) -> pb.RateLimit:
    message = pb.RateLimit(
        name=spec.name,
        overrides=[
            pb.LimitOverride(limit=_limit_message(o.limit), identities=list(o.identities))
            for o in spec.overrides
        ],
        ipv4_prefix=spec.ipv4_prefix,
        ipv6_prefix=spec.ipv6_prefix,
    )
    if spec.total is not None:
        message.total.CopyFrom(_limit_message(spec.total))
    if spec.identity is not None:
        message.identity.CopyFrom(_limit_message(spec.identity))
    return message


def route_message(route: PolicyRoute) -> pb.HttpRoute:
    message = pb.HttpRoute(
        name=route.name,
        matches=[_match_message(m) for m in route.matches],
        authorizations=[authorization_message(a) for a in route.authorizations],
    )
    if route.rate_limit is not None:
        message.rate_limit.CopyFrom(rate_limit_message(route.rate_limit))
    return message


def policy_message(policy: InboundPolicy) -> pb.InboundPolicy:
    message = pb.InboundPolicy(
        workload=policy.workload,
        port=policy.port,
        server=policy.server,
        protocol=policy.protocol,
        default_policy=MODE_TO_WIRE[policy.default_mode],
        authorizations=[authorization_message(a) for a in policy.authorizations],
        routes=[route_message(r) for r in policy.routes],
        probe_paths=list(policy.probe_paths),
    )
    if policy.rate_limit is not None:
        message.rate_limit.CopyFrom(rate_limit_message(policy.rate_limit))
    return message
