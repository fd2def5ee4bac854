#!/usr/bin/env bash
# Regenerates the Python code for every .proto under src/tulle/api/proto.
# The generated *_pb2*.py / *.pyi files are committed so that installing Tulle
# needs no protoc; run this after editing a .proto (needs `pip install -e '.[dev]'`).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -I src \
  --python_out=src --grpc_python_out=src \
  --mypy_out=src --mypy_grpc_out=src \
  src/tulle/api/proto/*.proto
echo "generated: $(ls src/tulle/api/proto/*_pb2*.py | tr '\n' ' ')"
