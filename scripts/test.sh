#!/usr/bin/env bash
# The README's test command: installs Tulle with its test dependencies, checks
# lint and types, and runs the whole test suite (unit, integration, e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[dev]'
python3 -m ruff check src tests bench
python3 -m mypy src
python3 -m pytest -q "$@"
