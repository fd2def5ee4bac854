#!/usr/bin/env bash
# Installs everything the test suite needs, quietly: the Debian tools the
# integration and browser tests drive, then Tulle with its test dependencies.
# Used by scripts/test.sh (the README's test command) and, through it, by .ci/run.
#
# Prints one line per step; the package managers' own output goes to a log
# file that is shown only when a step fails. Without root (or apt-get), a
# missing Debian tool is reported with the command that installs it, and the
# script fails: the suite does not run with tools missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# command:Debian package -- every external tool a test or benchmark runs.
TOOLS=(
  curl:curl wrk:wrk nginx:nginx h2load:nghttp2-client prometheus:prometheus
  chromium:chromium iptables:iptables ip:iproute2 strace:strace stress-ng:stress-ng
  haproxy:haproxy gcc:gcc
)

log=$(mktemp "${TMPDIR:-/tmp}/tulle-test-deps.XXXXXX.log")
trap 'rm -f "$log"' EXIT

step() {
  # step "what" command...: runs the command with its output in $log; on
  # failure prints the log and stops.
  local what=$1
  shift
  echo "test-deps: $what"
  if ! "$@" >>"$log" 2>&1; then
    echo "test-deps: FAILED: $what; its output:" >&2
    cat "$log" >&2
    exit 1
  fi
}

have() {
  # Debian puts nginx, iptables and ip in /usr/sbin, which a user's PATH may lack.
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

missing=()
for pair in "${TOOLS[@]}"; do
  have "${pair%%:*}" || missing+=("${pair##*:}")
done

# The native HTTP/2 codec (tulle.codec._h2native) links against libnghttp2's
# runtime library (curl's dependency, so normally present); gcc builds it.
if ! ldconfig -p 2>/dev/null | grep -q 'libnghttp2\.so\.14'; then
  missing+=(libnghttp2-14)
fi

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    step "apt-get update" apt-get update -qq
    step "installing ${missing[*]}" apt-get install -y -qq "${missing[@]}"
  else
    echo "test-deps: missing Debian packages: ${missing[*]}" >&2
    echo "test-deps: install them (as root) with: apt-get install -y ${missing[*]}" >&2
    echo "test-deps: then run this command again; the tests need every one of them." >&2
    exit 1
  fi
else
  echo "test-deps: Debian tools present (${#TOOLS[@]})"
fi

step "pip install -e '.[dev]'" python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
# The build skips the extension rather than fail (pip install must work
# anywhere); the suite must exercise it, so its absence here is an error.
step "native HTTP/2 codec built" python3 -c \
  'from tulle.proxy.http2.codec import CODEC, CODEC_DETAIL; assert CODEC == "nghttp2", CODEC_DETAIL'
step "native HTTP/1 head scanner built" python3 -c \
  'from tulle.codec.http1 import SCAN_REQUEST; assert SCAN_REQUEST is not None, "tulle.codec._h1native"'

# The Kubernetes tests' API server and etcd: built once (minutes of CPU), then cached.
if [ -d tests/integration/kubernetes ] && [ -f scripts/k8s_fixture.sh ]; then
  step "Kubernetes fixture (scripts/k8s_fixture.sh: built once, then cached)" \
    bash scripts/k8s_fixture.sh
fi
