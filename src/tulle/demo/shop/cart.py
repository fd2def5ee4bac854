"""`cart`: each user's basket, over gRPC (`tulle.demo.shop.CartService`).

Carts live in the replica's memory: with two replicas a user's cart depends on
which one the mesh picked, which is fine for a demo about traffic, not state.
"""

from __future__ import annotations

import sys
import threading

import grpc

from tulle.demo.shop.common import parse_args, serve_grpc
from tulle.demo.shop.proto import shop_pb2, shop_pb2_grpc

# Bounded so that a demo left running for days does not grow without end.
MAX_USERS = 10_000


class CartService(shop_pb2_grpc.CartServiceServicer):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._carts: dict[str, list[shop_pb2.CartItem]] = {}

    def _cart(self, user_id: str) -> shop_pb2.Cart:
        items = self._carts.get(user_id, [])
        total = sum(item.quantity * item.unit_price_cents for item in items)
        return shop_pb2.Cart(user_id=user_id, items=items, total_cents=total)

    def AddItem(
        self, request: shop_pb2.AddItemRequest, context: grpc.ServicerContext
    ) -> shop_pb2.Cart:
        if not request.item.product_id or request.item.quantity == 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "product_id and quantity are required")
        with self._lock:
            if request.user_id not in self._carts and len(self._carts) >= MAX_USERS:
                self._carts.clear()
            self._carts.setdefault(request.user_id, []).append(request.item)
            return self._cart(request.user_id)

    def GetCart(
        self, request: shop_pb2.GetCartRequest, context: grpc.ServicerContext
    ) -> shop_pb2.Cart:
        with self._lock:
            return self._cart(request.user_id)


def main(argv: list[str] | None = None) -> int:
    args = parse_args("The demo shop's cart (gRPC).", argv)
    service = CartService()
    serve_grpc(
        lambda server: shop_pb2_grpc.add_CartServiceServicer_to_server(service, server),
        args.port,
        f"cart replica {args.replica}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
