#!/usr/bin/env bash
# The README's test command: installs what the tests need (the Debian tools as
# root, Tulle with its test dependencies; scripts/test-deps.sh), checks lint
# and types, and runs the whole test suite (unit, integration, e2e).
#
# Every test runs: a tool a test needs that is missing fails that test (the
# suite runs with CI=1 unless CI is already set), it is never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh  # also builds (once) the Kubernetes fixture, scripts/k8s_fixture.sh
export CI="${CI:-1}"
echo "lint: ruff"
python3 -m ruff check -q src tests bench
echo "types: mypy"
if ! types=$(python3 -m mypy src 2>&1); then echo "$types"; exit 1; fi
echo "$types" | tail -n 1
echo "tests: pytest"
python3 -m pytest -q "$@"
if [ "$#" -eq 0 ]; then
  # The native codecs are optional: a machine without a compiler runs the
  # pure-Python ones. The unit tests run both; these run the HTTP/2 and the
  # HTTP/1 wire tests again through real proxies on the fallbacks.
  echo "tests: the pure-Python codecs (TULLE_H2_CODEC=python TULLE_H1_SCANNER=python)"
  TULLE_H2_CODEC=python TULLE_H1_SCANNER=python python3 -m pytest -q \
    tests/integration/http2 \
    tests/integration/proxy/test_proxy_bad_input.py \
    tests/integration/proxy/test_proxy_bodies.py \
    tests/integration/proxy/test_proxy_cut_responses.py \
    tests/integration/proxy/test_proxy_headers.py \
    tests/integration/proxy/test_proxy_http1_rules.py \
    tests/integration/proxy/test_proxy_keepalive.py
fi
