"""`catalog`: the shop's products over HTTP/1.1 JSON.

`GET /products` lists them, `GET /products/<id>` gives one (404 if unknown).
The replica named by `--slow-replica` answers `--slow-factor` times slower
than the others, so that the mesh's latency-aware balancing has something to
do: most calls should go to the fast replicas. `--failure-rate` makes a share
of product lookups answer 503, which a retryable route lets the mesh retry
(HTTP retries show in `tulle routes` today; gRPC ones depend on the proxy).
"""

from __future__ import annotations

import random
import re
import sys
import time

from tulle.demo.shop.common import JsonHandler, parse_args, serve_http

PRODUCTS = {
    "1": {"id": "1", "name": "Tulle veil", "price_cents": 2400},
    "2": {"id": "2", "name": "Sidecar mug", "price_cents": 1200},
    "3": {"id": "3", "name": "Mesh tote bag", "price_cents": 1800},
    "4": {"id": "4", "name": "Control-plane cap", "price_cents": 2000},
    "5": {"id": "5", "name": "Proxy socks", "price_cents": 900},
}
_PRODUCT_PATH = re.compile(r"^/products/([^/?]+)$")
BASE_DELAY_S = 0.005


def make_handler(delay_s: float, replica: int, failure_rate: float = 0.0) -> type[JsonHandler]:
    rng = random.Random()

    class CatalogHandler(JsonHandler):
        def do_GET(self) -> None:
            time.sleep(delay_s)
            path = self.path.split("?", 1)[0]
            if path in ("/", "/products"):
                self.send_json(200, {"replica": replica, "products": list(PRODUCTS.values())})
                return
            if path == "/healthz":
                self.send_json(200, {"ok": True})
                return
            match = _PRODUCT_PATH.match(path)
            if match and rng.random() < failure_rate:
                self.send_json(503, {"error": "the catalog database is busy, try again"})
                return
            product = PRODUCTS.get(match.group(1)) if match else None
            if product is None:
                self.send_json(404, {"error": f"no product at {path}"})
                return
            self.send_json(200, {**product, "replica": replica})

        do_HEAD = do_GET

    return CatalogHandler


def main(argv: list[str] | None = None) -> int:
    args = parse_args(
        "The demo shop's product catalog (HTTP/1.1 JSON).",
        argv,
        slow_replica=(int, -1, "the replica that answers slowly (-1: none)"),
        slow_factor=(float, 10.0, "how many times slower the slow replica is"),
        failure_rate=(float, 0.0, "share of product lookups answered with 503 (0..1)"),
    )
    slow = args.replica == args.slow_replica
    delay = BASE_DELAY_S * (args.slow_factor if slow else 1.0)
    what = f"catalog replica {args.replica}" + (" (the slow one)" if slow else "")
    if args.failure_rate > 0:
        what += f", failing {args.failure_rate:.0%} of lookups"
    serve_http(make_handler(delay, args.replica, args.failure_rate), args.port, what)
    return 0


if __name__ == "__main__":
    sys.exit(main())
