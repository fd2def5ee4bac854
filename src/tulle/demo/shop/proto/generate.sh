#!/usr/bin/env bash
# Regenerates the demo shop's gRPC code from shop.proto (committed, so that
# running the demo needs no protoc). Needs `pip install -e '.[dev]'`.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
python -m grpc_tools.protoc -I . \
  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
  tulle/demo/shop/proto/shop.proto
