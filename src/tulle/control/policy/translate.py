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

MODE_TO_WIRE: dict[str, pb.DefaultPolicy.ValueType] = {
    ALL_UNAUTHENTICATED: pb.DEFAULT_POLICY_ALL_UNAUTHENTICATED,
    ALL_AUTHENTICATED: pb.DEFAULT_POLICY_ALL_AUTHENTICATED,
    DENY: pb.DEFAULT_POLICY_DENY,
    AUDIT: pb.DEFAULT_POLICY_AUDIT,
}


def authentication_message(authentication: Authentication) -> pb.Authentication:
    message = pb.Authentication(name=authentication.name)
    if authentication.identities:
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


def route_message(route: PolicyRoute) -> pb.HttpRoute:
    return pb.HttpRoute(
        name=route.name,
        matches=[_match_message(m) for m in route.matches],
        authorizations=[authorization_message(a) for a in route.authorizations],
    )


def policy_message(policy: InboundPolicy) -> pb.InboundPolicy:
    return pb.InboundPolicy(
        workload=policy.workload,
        port=policy.port,
        server=policy.server,
        protocol=policy.protocol,
        default_policy=MODE_TO_WIRE[policy.default_mode],
        authorizations=[authorization_message(a) for a in policy.authorizations],
        routes=[route_message(r) for r in policy.routes],
        probe_paths=list(policy.probe_paths),
    )
