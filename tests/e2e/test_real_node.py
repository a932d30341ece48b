"""The real node real-0 (hack/cluster/node): pods really run there, next to the kwok nodes.

containerd and a kubelet built from the control plane's k8s.io/kubernetes module run inside the
network namespace the node creates; pods start from images imported into containerd (never
pulled), their logs, exec and port-forward reach the API server through its egress proxy, and
`node down` leaves nothing behind (processes, mounts, cgroups, the namespace).
"""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import HACK_CLUSTER, Cluster, cluster_env, wait_until
from e2e.real_node import (
    NODE_UP_TIMEOUT_S,
    RealNode,
    busybox_pod,
    client_logs,
    node_script,
    pod_phase,
    port_forward,
    start_real_node,
    wait_phase,
)

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]


def netns_exec(node: RealNode, *cmd: str) -> str:
    """Run a command inside the node's network namespace (read-only inspection)."""
    proc = subprocess.run(
        ["ip", "netns", "exec", node.netns, *cmd],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return proc.stdout


def host_addresses() -> str:
    """`ip -o addr` of the host's own network namespace."""
    return subprocess.run(
        ["ip", "-o", "addr"], capture_output=True, text=True, check=True, timeout=30
    ).stdout


class TestTheNode:
    """real-0 registers Ready beside the kwok nodes, with its own address and taint."""

    # The first test starts the node (and builds its binaries when hack/test has not).
    @pytest.mark.timeout(NODE_UP_TIMEOUT_S + 120)
    def test_real_node_is_ready_next_to_the_kwok_nodes(
        self, cluster: Cluster, real_node: RealNode
    ) -> None:
        nodes = {n["metadata"]["name"]: n for n in cluster.kubectl_json("get", "nodes")["items"]}
        node = nodes[real_node.name]
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", ready
        assert node["status"]["nodeInfo"]["kubeletVersion"] == cluster.k8s_version
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
        labels = node["metadata"]["labels"]
        assert labels["type"] == "real"
        taints = node["spec"]["taints"]
        assert {"key": "modulemesh.io/real-node", "value": "true", "effect": "NoSchedule"} in taints
        # It plays an EU GPU node as well: the GPUs in its status, the GPU taint, the labels.
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in taints
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "4"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
        assert labels["topology.kubernetes.io/region"] == "eu-west"
        assert labels["nvidia.com/gpu.present"] == "true"
        kwok = [n for n in nodes.values() if n["metadata"]["labels"].get("type") == "kwok"]
        assert len(kwok) == 6

    def test_up_with_real_node_and_status_reuse_the_running_node(
        self, cluster: Cluster, real_node: RealNode
    ) -> None:
        """The documented commands: `up --real-node` on a running cluster leaves both as they
        are, and `node status` says the node is Ready."""
        before = cluster.kubectl_json("get", "node", real_node.name)["metadata"]["uid"]
        up = subprocess.run(
            [str(HACK_CLUSTER / "up"), "--real-node"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert up.returncode == 0, up.stderr
        assert "cluster already running" in up.stderr
        assert f"real node {real_node.name} already running" in up.stderr
        status = node_script("status", timeout=30)
        assert status.returncode == 0, status.stderr
        assert f"real node {real_node.name}: Ready" in status.stdout
        assert cluster.kubectl_json("get", "node", real_node.name)["metadata"]["uid"] == before

    def test_node_address_exists_only_in_the_node_namespace(
        self, cluster: Cluster, real_node: RealNode
    ) -> None:
        """The InternalIP the API server dials is on an interface inside the namespace, not on
        the host; the namespace has no default route, so nothing in it reaches past the node."""
        node = cluster.kubectl_json("get", "node", real_node.name)
        internal = next(
            a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"
        )
        assert f" {internal}/" not in host_addresses()
        assert f" {internal}/" in netns_exec(real_node, "ip", "-o", "addr")
        assert "default" not in netns_exec(real_node, "ip", "route")


class TestPods:
    """Pods from imported images run for real: logs, exec, and port-forward work."""

    def test_pod_runs_from_imported_image_and_kubectl_reads_its_logs(
        self, cluster: Cluster, real_node: RealNode, namespace: str
    ) -> None:
        cluster.apply(
            busybox_pod(
                real_node, "hello", "echo hello from $(hostname); echo init=$(cat /proc/1/comm)"
            ),
            namespace,
        )
        pod = wait_phase(cluster, namespace, "hello", {"Succeeded"})
        assert pod["spec"]["nodeName"] == real_node.name
        logs = cluster.kubectl("-n", namespace, "logs", "hello").stdout
        # hostname is the pod's own UTS namespace; PID 1 of the container is its shell.
        assert logs.splitlines() == ["hello from hello", "init=sh"]
        status = pod["status"]["containerStatuses"][0]
        assert status["state"]["terminated"]["exitCode"] == 0
        assert status["image"] == real_node.test_image

    def test_failing_container_reports_its_exit_code(
        self, cluster: Cluster, real_node: RealNode, namespace: str
    ) -> None:
        cluster.apply(busybox_pod(real_node, "fails", "echo about to fail >&2; exit 3"), namespace)
        wait_until(
            lambda: pod_phase(cluster, namespace, "fails") == "Failed",
            timeout=120,
            message="pod fails to fail",
        )
        pod = cluster.kubectl_json("-n", namespace, "get", "pod", "fails")
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
        assert "about to fail" in cluster.kubectl("-n", namespace, "logs", "fails").stdout

    def test_pod_gets_an_address_in_the_pod_range_and_serves_through_port_forward(
        self, cluster: Cluster, real_node: RealNode, namespace: str
    ) -> None:
        """A busybox httpd in the pod answers through `kubectl port-forward` on 127.0.0.1; the
        API server reached the kubelet only through the node's egress proxy."""
        command = (
            "mkdir -p /www && echo served-by-$(hostname) > /www/index.html && "
            "exec httpd -f -p 8080 -h /www"
        )
        cluster.apply(busybox_pod(real_node, "web", command), namespace)
        pod = wait_phase(cluster, namespace, "web", {"Running"})
        pod_ip = pod["status"]["podIP"]
        assert pod_ip.startswith("10.245.0."), pod_ip
        assert f" {pod_ip}/" not in host_addresses()

        exec_out = cluster.kubectl("-n", namespace, "exec", "web", "--", "cat", "/www/index.html")
        assert exec_out.stdout.strip() == "served-by-web"

        with port_forward(cluster, namespace, "pod/web", 8080) as port:

            def fetch() -> str | None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                        return str(r.read().decode().strip())
                except OSError:
                    return None

            assert wait_until(fetch, timeout=60, message="port-forward to answer") == (
                "served-by-web"
            )


def plain_pod(node: RealNode, name: str, command: str, gpus: int = 0) -> dict[str, Any]:
    """A busybox pod with no placement of its own: no node selector, no toleration."""
    pod = busybox_pod(node, name, command)
    del pod["spec"]["nodeSelector"], pod["spec"]["tolerations"]
    if gpus:
        pod["spec"]["containers"][0]["resources"]["limits"] = {"nvidia.com/gpu": str(gpus)}
    return pod


class TestNamespacesOnTheNode:
    """`node use-namespace` (done by `node up` for default and modulemesh-system) sends every
    pod of a namespace to real-0 and only there, GPU pods included; other namespaces' pods
    stay on the kwok nodes."""

    def test_a_bound_namespace_runs_on_the_node_and_others_stay_on_kwok(
        self, cluster: Cluster, real_node: RealNode, namespace: str
    ) -> None:
        bound = cluster.create_namespace("bound")
        try:
            proc = node_script("use-namespace", bound, timeout=60)
            assert proc.returncode == 0, proc.stderr
            cluster.apply(plain_pod(real_node, "gpu-job", "echo ran", gpus=1), bound)
            pod = wait_phase(cluster, bound, "gpu-job", {"Succeeded"})
            assert pod["spec"]["nodeName"] == real_node.name
            # The API server's admission added the placement the pod did not ask for.
            assert pod["spec"]["nodeSelector"] == {"type": "real"}
            keys = {t["key"] for t in pod["spec"]["tolerations"]}
            assert {"modulemesh.io/real-node", "nvidia.com/gpu"} <= keys, keys
            assert cluster.kubectl("-n", bound, "logs", "gpu-job").stdout.strip() == "ran"
        finally:
            cluster.delete_namespace(bound)

        cluster.apply(plain_pod(real_node, "elsewhere", "echo ran"), namespace)

        def placed() -> str | None:
            pod = cluster.kubectl_json("-n", namespace, "get", "pod", "elsewhere")
            return pod["spec"].get("nodeName") or None

        node = wait_until(placed, timeout=60, message="the unbound pod to be scheduled")
        labels = cluster.kubectl_json("get", "node", node)["metadata"]["labels"]
        assert labels.get("type") == "kwok", node

    def test_the_readme_namespaces_are_bound(self, cluster: Cluster, real_node: RealNode) -> None:
        for ns in ("default", "modulemesh-system"):
            annotations = cluster.kubectl_json("get", "namespace", ns)["metadata"]["annotations"]
            assert annotations["scheduler.alpha.kubernetes.io/node-selector"] == "type=real", ns


def web_server(cluster: Cluster, node: RealNode, namespace: str) -> str:
    """A busybox httpd pod `web` (label app=web) behind a Service `web` on port 80; its DNS name."""
    command = (
        "mkdir -p /www && echo served-by-$(hostname) > /www/index.html && "
        "exec httpd -f -p 8080 -h /www"
    )
    pod = busybox_pod(node, "web", command)
    pod["metadata"]["labels"] = {"app": "web"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    cluster.apply([pod, service], namespace)
    wait_phase(cluster, namespace, "web", {"Running"})
    return f"web.{namespace}.svc.cluster.local"


# A shell loop for client pods: GET / from HOST:80 with nc until it is served (at most TRIES
# times, a second apart). busybox's wget is a static glibc build that crashes resolving names.
FETCH_UNTIL_SERVED = """
for i in $(seq 1 {tries}); do
  out=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 80 2>&1 | tail -1)
  case "$out" in served-by-*) echo "$out"; exit 0;; esac
  sleep 1
done
echo "never served: $out"
"""
# Until a connection is refused, then three more attempts: all must be refused.
FETCH_UNTIL_REFUSED = """
for i in $(seq 1 60); do
  out=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 80 2>&1 | tail -1)
  case "$out" in served-by-*) sleep 1;; *) break;; esac
done
refused=0
for i in 1 2 3; do
  out=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 80 2>&1 | tail -1)
  case "$out" in served-by-*) ;; *) refused=$((refused+1));; esac
done
echo "refused $refused/3"
"""


class TestServicesDnsAndPolicy:
    """kube-proxy routes Services, CoreDNS answers cluster names, kube-router enforces policy."""

    def test_service_name_resolves_and_routes_to_its_pod(
        self, cluster: Cluster, real_node: RealNode, namespace: str
    ) -> None:
        host = web_server(cluster, real_node, namespace)
        cluster_ip = cluster.kubectl_json("-n", namespace, "get", "service", "web")["spec"][
            "clusterIP"
        ]
        logs = client_logs(
            cluster,
            real_node,
            namespace,
            "client",
            f"nslookup {host} | grep '^Address: '; "
            + FETCH_UNTIL_SERVED.format(tries=30, host=host),
        )
        assert f"Address: {cluster_ip}" in logs, logs
        assert logs.strip().endswith("served-by-web"), logs

    def test_pods_reach_the_api_server_through_the_kubernetes_service(
        self, cluster: Cluster, real_node: RealNode, namespace: str
    ) -> None:
        """`kubernetes.default` leads to the API server on the host: a plain HTTP request to its
        TLS port gets the Go TLS server's own 400 answer."""
        endpoints = cluster.kubectl_json("-n", "default", "get", "endpointslices")["items"]
        kubernetes = next(
            e
            for e in endpoints
            if e["metadata"]["labels"].get("kubernetes.io/service-name") == "kubernetes"
        )
        node = cluster.kubectl_json("get", "node", real_node.name)
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        # The API server advertises the node's address: that is where the Service leads.
        assert kubernetes["endpoints"][0]["addresses"] == internal
        logs = client_logs(
            cluster,
            real_node,
            namespace,
            "to-apiserver",
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | "
            "nc -w 5 kubernetes.default.svc.cluster.local 443",
        )
        assert "Client sent an HTTP request to an HTTPS server" in logs, logs

    def test_network_policy_refuses_all_but_the_allowed_pods(
        self, cluster: Cluster, real_node: RealNode, namespace: str
    ) -> None:
        host = web_server(cluster, real_node, namespace)
        # Before any policy the same pod is served, so the refusal below is the policy's doing.
        before = client_logs(
            cluster,
            real_node,
            namespace,
            "before",
            FETCH_UNTIL_SERVED.format(tries=30, host=host),
            labels={"role": "other"},
        )
        assert before.strip() == "served-by-web", before
        cluster.apply(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "web-from-allowed"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "allowed"}}}]}],
                },
            },
            namespace,
        )
        denied = client_logs(
            cluster,
            real_node,
            namespace,
            "denied",
            FETCH_UNTIL_REFUSED.format(host=host),
            labels={"role": "other"},
        )
        assert denied.strip() == "refused 3/3", denied
        allowed = client_logs(
            cluster,
            real_node,
            namespace,
            "allowed",
            FETCH_UNTIL_SERVED.format(tries=30, host=host),
            labels={"role": "allowed"},
        )
        assert allowed.strip() == "served-by-web", allowed


class TestTeardown:
    """`node down` removes everything the node made; `node up` brings it back."""

    def test_down_leaves_nothing_and_up_restores_the_node(
        self, cluster: Cluster, real_node: RealNode, namespace: str
    ) -> None:
        cluster.apply(busybox_pod(real_node, "sleeper", "exec sleep 3600"), namespace)
        wait_phase(cluster, namespace, "sleeper", {"Running"})
        # Every process of the node (containerd, kubelet, shims, the pod's sleep), by cgroup.
        node_pids = {
            int(pid)
            for procs in Path("/sys/fs/cgroup/pids", real_node.cgroup).rglob("cgroup.procs")
            for pid in procs.read_text().split()
        }
        assert len(node_pids) >= 6

        proc = node_script("down", timeout=180)
        assert proc.returncode == 0, proc.stderr
        netns = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
        assert real_node.netns not in netns.split()
        mounts = Path("/proc/self/mountinfo").read_text()
        assert str(real_node.state_dir) not in mounts
        assert str(real_node.run_dir) not in mounts
        assert not real_node.run_dir.exists()
        # No cgroup is left in any hierarchy (v1 ones and, on hybrid hosts, cgroup2's).
        assert list(Path("/sys/fs/cgroup").glob(f"*/{real_node.cgroup}")) == []
        # No process of the node is left: no shim, no container's sleep.
        shims = subprocess.run(
            ["pgrep", "-f", f"containerd-shim-runc-v2.*{real_node.run_dir}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert shims.stdout == ""
        still_alive = [p for p in node_pids if Path(f"/proc/{p}").exists()]
        assert still_alive == []
        assert _node_deleted(cluster, real_node)

        start_real_node()
        nodes = cluster.kubectl_json("get", "nodes")["items"]
        assert real_node.name in {n["metadata"]["name"] for n in nodes}


def _node_deleted(cluster: Cluster, node: RealNode) -> bool:
    """Whether the Node object is gone (deletion is asynchronous)."""
    try:
        wait_until(
            lambda: cluster.kubectl("get", "node", node.name, check=False).returncode != 0,
            timeout=30,
            message=f"node {node.name} to be deleted",
        )
    except TimeoutError:
        return False
    return True


def test_node_binaries_report_the_control_plane_version() -> None:
    """kubelet and kube-proxy come from the same k8s.io/kubernetes build as the API server."""
    env = cluster_env()
    for name in ("kubelet", "kube-proxy"):
        out = subprocess.run(
            [str(Path(env["BIN_DIR"]) / name), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert env["K8S_VERSION"] in out.stdout + out.stderr, (name, out.stdout, out.stderr)
