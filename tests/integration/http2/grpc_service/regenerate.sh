#!/bin/sh
# Regenerates echo_pb2.py and echo_pb2_grpc.py from echo.proto (run from anywhere).
# The code is generated from the parent folder so that it imports itself as
# `grpc_service.echo_pb2`, the name the tests use.
set -e
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. grpc_service/echo.proto
