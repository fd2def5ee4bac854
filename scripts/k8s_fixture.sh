#!/usr/bin/env bash
# Builds and caches the Kubernetes test fixture: kube-apiserver and
# kube-controller-manager v1.20.2 (from Debian bookworm's source
# package `kubernetes`, compiled with bullseye's golang-1.15 unpacked with
# `dpkg -x`, never installed) and etcd (Debian's etcd-server, unpacked).
#
# Everything lives under $TULLE_K8S_CACHE (default /var/cache/tulle-test/k8s):
#   bin/{kube-apiserver,kube-controller-manager,etcd}
# and, with TULLE_K8S_KUBECTL=1, bin/kubectl (tests otherwise use the kubectl
# on PATH for `kubectl apply --dry-run=server`).
# apt runs with a private configuration (own sources.list and state dirs under
# the cache) pointing at the mirror the machine's apt already uses, so the
# system's sources and packages are untouched.
#
# Idempotent: exits at once when the binaries are cached. The build takes about
# 11+ minutes of CPU on two cores; it runs under `nice -n 19`.
set -euo pipefail

CACHE=${TULLE_K8S_CACHE:-/var/cache/tulle-test/k8s}
BIN=$CACHE/bin
K8S_VERSION=v1.20.2
K8S_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
WANT=(kube-apiserver kube-controller-manager etcd)
[ "${TULLE_K8S_KUBECTL:-0}" = 1 ] && WANT+=(kubectl)

have_all() {
  local b
  for b in "${WANT[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

if have_all; then
  exit 0
fi

mkdir -p "$CACHE" "$BIN"
exec 9>"$CACHE/.lock"
if ! flock -w 3600 9; then
  echo "k8s_fixture: another build holds $CACHE/.lock for over an hour" >&2
  exit 1
fi
have_all && exit 0

log() { echo "k8s_fixture: $*" >&2; }

# --- the mirror the machine already uses -----------------------------------
mirror=""
security=""
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -r "$f" ] || continue
  while read -r uri; do
    case "$uri" in
      *debian-security*) [ -n "$security" ] || security=$uri ;;
      */debian|*/debian/) [ -n "$mirror" ] || mirror=${uri%/} ;;
    esac
  done < <(grep -hoE '(https?|file)://[^ ]+' "$f" 2>/dev/null || true)
done
mirror=${mirror:-http://deb.debian.org/debian}
security=${security:-${mirror%/debian}/debian-security}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
log "mirror $mirror, security $security"

# --- private apt -----------------------------------------------------------
APT=$CACHE/apt
mkdir -p "$APT/etc/sources.list.d" "$APT/etc/preferences.d" "$APT/state/lists/partial" \
  "$APT/cache/archives/partial"
cat >"$APT/etc/sources.list" <<EOF
deb [signed-by=$keyring] $mirror bookworm main
deb-src [signed-by=$keyring] $mirror bookworm main
deb [signed-by=$keyring] $security bookworm-security main
deb-src [signed-by=$keyring] $security bookworm-security main
deb [signed-by=$keyring] $mirror bullseye main
EOF
: >"$APT/state/status"
apt_opts=(
  -o "Dir::Etc::SourceList=$APT/etc/sources.list"
  -o "Dir::Etc::SourceParts=$APT/etc/sources.list.d"
  -o "Dir::Etc::Preferences=$APT/etc/preferences"
  -o "Dir::Etc::PreferencesParts=$APT/etc/preferences.d"
  -o "Dir::State=$APT/state"
  -o "Dir::State::status=$APT/state/status"
  -o "Dir::Cache=$APT/cache"
  -o "APT::Sandbox::User=root"
  -o "Debug::NoLocking=1"
)
log "apt-get update (private configuration under $APT)"
apt-get "${apt_opts[@]}" update -qq

DL=$CACHE/debs
mkdir -p "$DL"
download() { # package[=version]...
  (cd "$DL" && apt-get "${apt_opts[@]}" download "$@")
}

# --- etcd ------------------------------------------------------------------
if [ ! -x "$BIN/etcd" ]; then
  log "etcd from Debian etcd-server"
  rm -f "$DL"/etcd-server_*.deb
  download etcd-server
  rm -rf "$CACHE/etcd-root"
  dpkg -x "$DL"/etcd-server_*.deb "$CACHE/etcd-root"
  install -m 0755 "$CACHE/etcd-root/usr/bin/etcd" "$BIN/etcd"
fi

# --- toolchain: golang-1.15 from bullseye, rsync, unpacked -----------------
TOOLS=$CACHE/tools
if [ ! -x "$TOOLS/usr/lib/go-1.15/bin/go" ] || [ ! -x "$TOOLS/usr/bin/rsync" ]; then
  log "golang-1.15 (bullseye) and rsync, unpacked into $TOOLS"
  rm -f "$DL"/golang-1.15-*.deb "$DL"/rsync_*.deb "$DL"/libpopt0_*.deb "$DL"/libxxhash0_*.deb
  download golang-1.15-go/bullseye golang-1.15-src/bullseye rsync libpopt0 libxxhash0
  rm -rf "$TOOLS"
  for deb in "$DL"/golang-1.15-*.deb "$DL"/rsync_*.deb "$DL"/libpopt0_*.deb "$DL"/libxxhash0_*.deb; do
    dpkg -x "$deb" "$TOOLS"
  done
fi
export GOROOT=$TOOLS/usr/lib/go-1.15
export PATH=$GOROOT/bin:$TOOLS/usr/bin:$PATH
export LD_LIBRARY_PATH=$TOOLS/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export GOCACHE=$CACHE/gocache
export GOFLAGS=-mod=vendor
unset GOPATH GOBIN
go version >&2

# --- kubernetes source -----------------------------------------------------
SRC=$CACHE/src
if [ ! -f "$SRC/.unpacked" ]; then
  log "apt-get source kubernetes (bookworm)"
  rm -rf "$SRC"
  mkdir -p "$SRC"
  (cd "$SRC" && apt-get "${apt_opts[@]}" source -qq kubernetes)
  touch "$SRC/.unpacked"
fi
tree=$(find "$SRC" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
[ -n "$tree" ] || { log "no kubernetes-* tree in $SRC"; exit 1; }

export KUBE_GIT_VERSION=$K8S_VERSION
export KUBE_GIT_COMMIT=$K8S_COMMIT
export KUBE_GIT_TREE_STATE=clean
export KUBE_GIT_MAJOR=1
export KUBE_GIT_MINOR=20
build() { # cmd/<name>
  log "building $1 (go 1.15; minutes)"
  (cd "$tree" && nice -n 19 make WHAT="$1" GOFLAGS=-mod=vendor >&2)
}
for b in "${WANT[@]}"; do
  [ "$b" = etcd ] && continue
  if [ ! -x "$BIN/$b" ]; then
    build "cmd/$b"
    out=$(find "$tree/_output" -type f -name "$b" -perm -u+x | head -n1)
    [ -n "$out" ] || { log "make produced no $b"; exit 1; }
    install -m 0755 "$out" "$BIN/$b"
  fi
done

have_all
log "cached in $BIN: ${WANT[*]}"
