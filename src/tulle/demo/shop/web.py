"""`web`: the shop's HTTP front, calling the others through the mesh.

* `GET /` -- a plain-text page listing the products (calls `catalog`).
* `GET /product/<id>` -- one product as JSON (calls `catalog`; 404 passes through).
* `POST /checkout` (GET works too, for curl) -- puts a random product in a
  random user's cart (`catalog` over HTTP, then `cart.AddItem` over gRPC) and
  charges it (`payments.Charge` over gRPC); 502 when a call below fails.
* `GET /healthz` -- 200, calls nothing.
"""

from __future__ import annotations

import random
import re
import sys
from typing import Any

import grpc

from tulle.demo.shop.common import (
    JsonHandler,
    MeshCallError,
    get_json,
    grpc_channel,
    parse_args,
    serve_http,
)
from tulle.demo.shop.proto import shop_pb2, shop_pb2_grpc

_PRODUCT_PATH = re.compile(r"^/product/([^/?]+)$")
GRPC_TIMEOUT_S = 3.0


class Backends:
    """The stubs of the gRPC services; channels are shared by every request thread."""

    def __init__(self) -> None:
        self.cart = shop_pb2_grpc.CartServiceStub(grpc_channel("cart"))
        self.payments = shop_pb2_grpc.PaymentsServiceStub(grpc_channel("payments"))


def checkout(backends: Backends, rng: random.Random) -> tuple[int, dict[str, Any]]:
    """One checkout; (status, JSON body)."""
    user = f"user-{rng.randrange(1000)}"
    product_id = str(rng.randrange(1, 6))
    try:
        product = get_json("catalog", f"/products/{product_id}")
    except MeshCallError as exc:
        return 502, {"error": f"catalog: {exc}"}
    item = shop_pb2.CartItem(
        product_id=product_id, quantity=1, unit_price_cents=int(product["price_cents"])
    )
    try:
        cart = backends.cart.AddItem(
            shop_pb2.AddItemRequest(user_id=user, item=item), timeout=GRPC_TIMEOUT_S
        )
        receipt = backends.payments.Charge(
            shop_pb2.ChargeRequest(user_id=user, amount_cents=item.unit_price_cents),
            timeout=GRPC_TIMEOUT_S,
        )
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        name = code.name if code is not None else "UNKNOWN"
        return 502, {"error": f"{name}: {exc.details() if isinstance(exc, grpc.Call) else exc}"}
    return 200, {
        "user": user,
        "product": product["name"],
        "charged_cents": receipt.amount_cents,
        "transaction": receipt.transaction_id,
        "cart_items": len(cart.items),
    }


def make_handler(backends: Backends) -> type[JsonHandler]:
    rng = random.Random()

    class WebHandler(JsonHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self.send_json(200, {"ok": True})
                return
            if path == "/checkout":
                self.send_json(*checkout(backends, rng))
                return
            try:
                if path == "/":
                    listing = get_json("catalog", "/products")
                    lines = [
                        f"  {p['id']}. {p['name']:<20} {p['price_cents'] / 100:6.2f}"
                        for p in listing["products"]
                    ]
                    page = "Tulle shop\n\n" + "\n".join(lines) + "\n"
                    self.send_body(200, page.encode(), "text/plain; charset=utf-8")
                    return
                match = _PRODUCT_PATH.match(path)
                if match is None:
                    self.send_json(404, {"error": f"no page at {path}"})
                    return
                self.send_json(200, get_json("catalog", f"/products/{match.group(1)}"))
            except MeshCallError as exc:
                status = exc.status if exc.status == 404 else 502
                self.send_json(status, {"error": str(exc)})

        def do_POST(self) -> None:
            self.read_body()
            if self.path.split("?", 1)[0] == "/checkout":
                self.send_json(*checkout(backends, rng))
                return
            self.send_json(404, {"error": f"no page at {self.path}"})

        do_HEAD = do_GET

    return WebHandler


def main(argv: list[str] | None = None) -> int:
    args = parse_args("The demo shop's HTTP front.", argv)
    serve_http(make_handler(Backends()), args.port, f"web replica {args.replica}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
