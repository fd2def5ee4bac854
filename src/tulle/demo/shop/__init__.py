"""The demo shop: small services that `tulle up` runs with no argument.

`web` (HTTP front) calls `catalog` over HTTP/1.1 JSON and `cart` and
`payments` over gRPC (shop.proto), all through the instance's sidecar;
`loadgen` sends a steady trickle of requests to `web` so that the mesh's
numbers move. `payments` fails on purpose on a share of calls (retries show)
and one `catalog` replica is ten times slower (balancing shows). Every service
is stdlib + grpcio and runs as `python -m tulle.demo.shop.<service>` or
`tulle demo shop <service>`.
"""
