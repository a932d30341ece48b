"""The real node real-0 (hack/cluster/node): pods really run there, next to the kwok nodes.

containerd and a kubelet built from the control plane's k8s.io/kubernetes module run inside the
network namespace the node creates; pods start from images imported into containerd (never
pulled), their logs, exec and port-forward reach the API server through its egress proxy, and
`node down` leaves nothing behind (processes, mounts, cgroups, the namespace).
"""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import (
    FIXTURE_OWNER,
    HACK_CLUSTER,
    REPO_ROOT,
    Cluster,
    ClusterError,
    cluster_env,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

NODE_UP_TIMEOUT_S = 3600.0  # a cold build of the node's binaries can be part of the first start
REAL_NODE_TOLERATION = {
    "key": "modulemesh.io/real-node",
    "operator": "Exists",
    "effect": "NoSchedule",
}


@dataclass(frozen=True)
class RealNode:
    """The running real node: its name, network namespace, test image, cgroup and state paths."""

    name: str
    netns: str
    test_image: str
    cgroup: str
    state_dir: Path
    run_dir: Path


def _node_script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HACK_CLUSTER / "node"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_real_node(cluster: Cluster | None = None) -> None:
    """`hack/cluster/node up` (reuses a running node); raise with its output when it fails.

    A control plane started before the real node existed lacks the API server settings it needs
    (egress selector, advertise address); given `cluster`, one that a test fixture started and
    that no other test session uses is restarted with them.
    """
    proc = _node_script("up", timeout=NODE_UP_TIMEOUT_S)
    if proc.returncode != 0 and "predates the real node" in proc.stderr and cluster is not None:
        owner_file = cluster.state_dir / "owner"
        owner = owner_file.read_text().strip() if owner_file.is_file() else ""
        lock = cluster.users_lock
        if owner == FIXTURE_OWNER and lock is not None and lock.try_exclusive():
            try:
                cluster.stop()
                proc = subprocess.run(
                    [str(HACK_CLUSTER / "up"), "--real-node"],
                    capture_output=True,
                    text=True,
                    timeout=NODE_UP_TIMEOUT_S,
                    check=False,
                    env={**os.environ, "MODULEMESH_CLUSTER_OWNER": FIXTURE_OWNER},
                )
            finally:
                lock.share()
    if proc.returncode != 0:
        raise ClusterError(f"hack/cluster/node up failed:\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="module")
def real_node(cluster: Cluster) -> Iterator[RealNode]:
    """The real node on the session's cluster, started when it is not running.

    A node started here is stopped after the module, so the e2e tests that follow see the
    cluster as they found it; one that was already running (started by hand) is left alone.
    """
    started_here = _node_script("status", timeout=30).returncode != 0
    start_real_node(cluster)
    env = cluster_env()
    yield RealNode(
        name=env["NODE_NAME"],
        netns=env["NODE_NETNS"],
        test_image=env["NODE_TEST_IMAGE"],
        cgroup=env["NODE_CGROUP"],
        state_dir=Path(env["CLUSTER_STATE"]) / "node",
        run_dir=Path(env["NODE_RUN"]),
    )
    if started_here:
        proc = _node_script("down", timeout=180)
        if proc.returncode != 0:
            raise ClusterError(f"hack/cluster/node down failed: {proc.stderr.strip()}")


def busybox_pod(node: RealNode, name: str, command: str, **extra: Any) -> dict[str, Any]:
    """A pod of the node's busybox image pinned to the real node, never pulled."""
    spec: dict[str, Any] = {
        "nodeSelector": {"kubernetes.io/hostname": node.name},
        "tolerations": [REAL_NODE_TOLERATION],
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "main",
                "image": node.test_image,
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", command],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            }
        ],
        **extra,
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def pod_phase(cluster: Cluster, namespace: str, name: str) -> str:
    pod = cluster.kubectl_json("-n", namespace, "get", "pod", name)
    return str(pod.get("status", {}).get("phase", ""))


def wait_phase(cluster: Cluster, namespace: str, name: str, phases: set[str]) -> dict[str, Any]:
    """Wait until the pod reaches one of `phases`; fail early with its events if it fails."""

    def probe() -> dict[str, Any] | None:
        pod: dict[str, Any] = cluster.kubectl_json("-n", namespace, "get", "pod", name)
        phase = pod.get("status", {}).get("phase", "")
        if phase in phases:
            return pod
        if phase == "Failed":
            events = cluster.kubectl("-n", namespace, "get", "events", check=False).stdout
            raise AssertionError(f"pod {name} failed: {pod['status']}\n{events}")
        return None

    try:
        return wait_until(probe, timeout=120, message=f"pod {name} to be {sorted(phases)}")
    except TimeoutError:
        events = cluster.kubectl("-n", namespace, "get", "events", check=False).stdout
        raise AssertionError(f"pod {name} never reached {sorted(phases)}:\n{events}") from None


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        assert node["metadata"]["labels"]["type"] == "real"
        assert {"key": "modulemesh.io/real-node", "value": "true", "effect": "NoSchedule"} in node[
            "spec"
        ]["taints"]
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
        status = _node_script("status", timeout=30)
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

        port = free_port()
        forward = subprocess.Popen(
            [
                str(cluster.kubectl_path),
                "--kubeconfig",
                str(cluster.kubeconfig),
                "-n",
                namespace,
                "port-forward",
                "--address",
                "127.0.0.1",
                "pod/web",
                f"{port}:8080",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:

            def fetch() -> str | None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                        return str(r.read().decode().strip())
                except OSError:
                    return None

            assert wait_until(fetch, timeout=60, message="port-forward to answer") == (
                "served-by-web"
            )
        finally:
            forward.terminate()
            forward.wait(timeout=30)


def client_logs(
    cluster: Cluster,
    node: RealNode,
    namespace: str,
    name: str,
    script: str,
    labels: dict[str, str] | None = None,
) -> str:
    """Run a one-shot busybox pod on the real node; its logs once it succeeded."""
    pod = busybox_pod(node, name, script)
    pod["metadata"]["labels"] = dict(labels or {})
    cluster.apply(pod, namespace)
    wait_phase(cluster, namespace, name, {"Succeeded"})
    return cluster.kubectl("-n", namespace, "logs", name).stdout


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


CHART = REPO_ROOT / "charts" / "modulemesh"
EXAMPLE = REPO_ROOT / "examples" / "quickstart.yaml"
IMAGES_LIB = REPO_ROOT / "hack" / "images" / "lib.sh"


def ensure_slim_image() -> None:
    """The slim image from hack/images (operator, sidecar, router), built when it is absent."""
    probe = subprocess.run(
        ["bash", "-c", f'source "{IMAGES_LIB}" && image_exists "$(image_name slim)"'],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        build = subprocess.run(
            [str(REPO_ROOT / "hack" / "images" / "build"), "slim"],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if build.returncode != 0:
            raise ClusterError(f"hack/images/build slim failed:\n{build.stderr}")


class TestChartOnTheNode:
    """The chart's operator runs in-cluster on real-0 from an image loaded with `load-images`
    under the chart's default name (no pull), and its webhook, served in the cluster, refuses a
    bad graph at `kubectl apply`."""

    @pytest.mark.timeout(2400)
    def test_operator_runs_in_cluster_and_its_webhook_refuses_a_bad_graph(
        self, cluster: Cluster, real_node: RealNode, namespace: str
    ) -> None:
        ensure_slim_image()
        load = _node_script("load-images", "slim", timeout=900)
        assert load.returncode == 0, load.stderr
        release_ns = cluster.create_namespace("mm-system")
        try:
            # Only the placement is set: the image, its tag and the pull policy are the chart's.
            cluster.helm(
                "install", "modulemesh", str(CHART), "-n", release_ns,
                "--set", "nodeSelector.type=real",
                "--set", "tolerations[0].key=modulemesh.io/real-node",
                "--set", "tolerations[0].operator=Exists",
                "--set", "tolerations[0].effect=NoSchedule",
                "--wait", "--timeout", "180s",
                timeout=240,
            )  # fmt: skip
            pods = cluster.kubectl_json("-n", release_ns, "get", "pods")["items"]
            assert len(pods) == 1
            pod = pods[0]
            assert pod["spec"]["nodeName"] == real_node.name
            assert pod["spec"]["serviceAccountName"] == "modulemesh"
            status = pod["status"]["containerStatuses"][0]
            assert status["ready"] is True
            assert status["image"].startswith("ghcr.io/modulemesh/modulemesh:")

            bad = EXAMPLE.read_text().replace("module: classifier", "module: clasifier")

            def refused() -> str | None:
                proc = cluster.kubectl(
                    "-n", namespace, "apply", "--dry-run=server", "-f", "-",
                    input=bad, check=False,
                )  # fmt: skip
                return proc.stderr if proc.returncode != 0 else None

            # The operator sets its webhook's CA bundle once it serves; until then the chart's
            # failurePolicy (Ignore) admits.
            stderr = wait_until(refused, timeout=60, interval=1.0, message="the webhook refuses")
            assert 'admission webhook "modulegraphs.modulemesh.io" denied' in stderr, stderr
            assert "spec.routing.nodes[0].steps[1].module" in stderr, stderr
        finally:
            cluster.helm("uninstall", "modulemesh", "-n", release_ns, "--wait", check=False)
            cluster.delete_namespace(release_ns)


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

        proc = _node_script("down", timeout=180)
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
