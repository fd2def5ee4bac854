"""`payments`: charges over gRPC (`tulle.demo.shop.PaymentsService`), flaky on purpose.

A share of calls (`--failure-rate`, default 0.2) fails with UNAVAILABLE before
any message is sent: a trailers-only answer that a proxy may retry, since no
part of the response reached the client. The manifest marks the route
retryable, so the mesh's retries hide most failures from `web`.
"""

from __future__ import annotations

import random
import sys
import uuid

import grpc

from tulle.demo.shop.common import parse_args, serve_grpc
from tulle.demo.shop.proto import shop_pb2, shop_pb2_grpc


class PaymentsService(shop_pb2_grpc.PaymentsServiceServicer):
    def __init__(self, failure_rate: float, rng: random.Random | None = None) -> None:
        self.failure_rate = failure_rate
        self._rng = rng or random.Random()

    def Charge(
        self, request: shop_pb2.ChargeRequest, context: grpc.ServicerContext
    ) -> shop_pb2.ChargeReply:
        if self._rng.random() < self.failure_rate:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the payment processor is unavailable")
        if request.amount_cents == 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "nothing to charge")
        return shop_pb2.ChargeReply(
            transaction_id=uuid.uuid4().hex[:16], amount_cents=request.amount_cents
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(
        "The demo shop's payments (gRPC), failing on purpose on a share of calls.",
        argv,
        failure_rate=(float, 0.2, "share of calls that fail with UNAVAILABLE (0..1)"),
    )
    service = PaymentsService(args.failure_rate)
    serve_grpc(
        lambda server: shop_pb2_grpc.add_PaymentsServiceServicer_to_server(service, server),
        args.port,
        f"payments replica {args.replica} (failing {args.failure_rate:.0%} of calls)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
