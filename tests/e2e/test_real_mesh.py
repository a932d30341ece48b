"""The README's cluster commands, unchanged, on the real node real-0: the mesh runs and serves.

`helm install modulemesh charts/modulemesh -n modulemesh-system --create-namespace` with the
images `hack/cluster/node load-images` put into real-0's containerd under the chart's default
names, then `kubectl apply -f examples/quickstart.yaml`: the operator runs in-cluster under
its ServiceAccount, its webhook refuses a bad graph, the graph's pods run on real-0 (the node
binds the `default` and `modulemesh-system` namespaces to itself) and the router's Service
answers with the numbers `modulemesh run` gives for the same YAML, through JSON and
tritonclient; the module envelopes reach the graph's status and `modulemesh status`. Then the
graph's NetworkPolicy is enforced: only the router reaches a module's sidecar, and nothing
outside a module pod reaches its runtime.

One helm install serves the module and one graph each class, so the pods stay few (real-0 has
two CPUs) and the module stays within its time budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import yaml

from e2e.cluster import REPO_ROOT, Cluster, ClusterError, wait_until
from e2e.real_node import (
    RealNode,
    client_logs,
    free_port,
    node_script,
    port_forward,
    wait_phase,
)

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

CHART = REPO_ROOT / "charts" / "modulemesh"
EXAMPLES = REPO_ROOT / "examples"
QUICKSTART = EXAMPLES / "quickstart.yaml"
IMAGES_LIB = REPO_ROOT / "hack" / "images" / "lib.sh"
IMAGE_TARGETS = ("slim", "runtime", "runtime-gpu")
# The README's namespaces: the chart's, and kubectl's default for the graph.
RELEASE_NAMESPACE = "modulemesh-system"
GRAPH_NAMESPACE = "default"
GRAPH_LABEL = "modulemesh.io/graph"
MODULE_LABEL = "modulemesh.io/module"
READY_TIMEOUT_S = 300.0
# The quickstart's input: FP32 [batch, 16], fixed so both meshes see the same numbers.
X = np.random.default_rng(13).standard_normal((4, 16)).astype(np.float32)


def ensure_images() -> None:
    """The images of hack/images (operator, sidecar, router; CPU and GPU runtimes), built when
    absent, then in real-0's containerd under the chart's names (skipped when already there)."""
    for target in IMAGE_TARGETS:
        probe = subprocess.run(
            ["bash", "-c", f'source "{IMAGES_LIB}" && image_exists "$(image_name {target})"'],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if probe.returncode != 0:
            build = subprocess.run(
                [str(REPO_ROOT / "hack" / "images" / "build"), target],
                capture_output=True,
                text=True,
                timeout=1800,
                check=False,
            )
            if build.returncode != 0:
                raise ClusterError(f"hack/images/build {target} failed:\n{build.stderr}")
    load = node_script("load-images", *IMAGE_TARGETS, timeout=1500)
    if load.returncode != 0:
        raise ClusterError(f"hack/cluster/node load-images failed:\n{load.stderr}")


@pytest.fixture(scope="module")
def release(cluster: Cluster, real_node: RealNode) -> Iterator[str]:
    """The README's `helm install`, unchanged (no value set), once for the module."""
    ensure_images()
    cluster.helm("uninstall", "modulemesh", "-n", RELEASE_NAMESPACE, "--wait", check=False)
    # node up binds the README's namespaces to real-0; another test may have deleted or
    # released one since (test_operations_docs installs the docs' kwok-only release there).
    bind = node_script("use-namespace", RELEASE_NAMESPACE, GRAPH_NAMESPACE, timeout=60)
    if bind.returncode != 0:
        raise ClusterError(f"hack/cluster/node use-namespace failed:\n{bind.stderr}")
    # The session's cluster may hold the CRDs already, applied by other tests with kubectl:
    # bring them to the chart's as docs/operations.md "Upgrade" says, so helm's own apply of
    # the same CRDs finds nothing to conflict with (a fresh cluster has none).
    if cluster.kubectl("get", "crd", "modulegraphs.modulemesh.io", check=False).returncode == 0:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    cluster.helm(
        "install", "modulemesh", str(CHART), "-n", RELEASE_NAMESPACE, "--create-namespace",
        "--wait", "--timeout", "240s",
        timeout=300,
    )  # fmt: skip
    try:
        yield RELEASE_NAMESPACE
    finally:
        cluster.helm("uninstall", "modulemesh", "-n", RELEASE_NAMESPACE, "--wait", check=False)


def graph_pods(cluster: Cluster, namespace: str, graph: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = cluster.kubectl_json(
        "-n", namespace, "get", "pods", "-l", f"{GRAPH_LABEL}={graph}"
    )["items"]
    return pods


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_]
    return found[0] if found else {}


def wait_ready(cluster: Cluster, namespace: str, graph: str) -> dict[str, Any]:
    """Wait for the graph's Ready condition; on timeout fail with its status and pod events."""

    def ready() -> dict[str, Any] | None:
        obj: dict[str, Any] = cluster.kubectl_json("-n", namespace, "get", "mg", graph)
        return obj if condition(obj, "Ready").get("status") == "True" else None

    try:
        return wait_until(ready, timeout=READY_TIMEOUT_S, interval=2.0, message=f"{graph} Ready")
    except TimeoutError:
        obj = cluster.kubectl_json("-n", namespace, "get", "mg", graph)
        pods = cluster.kubectl("-n", namespace, "get", "pods", "-o", "wide", check=False).stdout
        events = cluster.kubectl("-n", namespace, "get", "events", check=False).stdout
        raise AssertionError(
            f"{graph} not Ready in {READY_TIMEOUT_S:.0f}s: {json.dumps(obj.get('status'))}\n"
            f"{pods}\n{events[-4000:]}"
        ) from None


def apply_example(cluster: Cluster, path: Path, *, stdin: str | None = None) -> None:
    """`kubectl apply -f FILE` into kubectl's default namespace, as the README says."""
    if stdin is None:
        cluster.kubectl("apply", "-f", str(path))
    else:
        cluster.kubectl("apply", "-f", "-", input=stdin)


def delete_example(cluster: Cluster, graph: str, path: Path, stdin: str | None = None) -> None:
    """Delete what apply made and wait until the graph's pods are gone (real-0's CPUs free)."""
    args = ["delete", "--ignore-not-found", "--wait=true", "-f"]
    if stdin is None:
        cluster.kubectl(*args, str(path), check=False, timeout=120)
    else:
        cluster.kubectl(*args, "-", input=stdin, check=False, timeout=120)
    wait_until(
        lambda: not graph_pods(cluster, GRAPH_NAMESPACE, graph),
        timeout=120,
        message=f"{graph}'s pods to go",
    )


class LocalRun:
    """`modulemesh run FILE` on 127.0.0.1 (real runtime, sidecar and router processes)."""

    def __init__(self, graph: Path, cwd: Path) -> None:
        self.port = free_port()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "modulemesh", "run", str(graph), "--port", str(self.port),
             "--quiet"],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("ready:" in line for line in self.lines):
                return
            assert self.popen.poll() is None, "\n".join(self.lines[-40:])
            time.sleep(0.2)
        raise AssertionError("modulemesh run never ready:\n" + "\n".join(self.lines[-40:]))

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def infer_json(base: str, model: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One Open Inference Protocol v2 JSON request; the outputs as arrays."""
    body = {
        "inputs": [
            {"name": n, "datatype": "FP32", "shape": list(a.shape), "data": a.ravel().tolist()}
            for n, a in tensors.items()
        ]
    }
    response = httpx.post(f"{base}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return {
        o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"])
        for o in response.json()["outputs"]
    }


@pytest.fixture(scope="class")
def quickstart(cluster: Cluster, release: str) -> Iterator[dict[str, Any]]:
    """`kubectl apply -f examples/quickstart.yaml`, Ready; deleted after the class."""
    apply_example(cluster, QUICKSTART)
    try:
        yield wait_ready(cluster, GRAPH_NAMESPACE, "quickstart")
    finally:
        delete_example(cluster, "quickstart", QUICKSTART)


@pytest.fixture(scope="class")
def router_port(cluster: Cluster, quickstart: dict[str, Any]) -> Iterator[int]:
    """`kubectl port-forward svc/quickstart-router` on 127.0.0.1."""
    with port_forward(cluster, GRAPH_NAMESPACE, "svc/quickstart-router", 8080) as port:
        yield port


MEBI = 1024 * 1024
UNITS = {"Ki": 1024, "Mi": MEBI, "Gi": 1024 * MEBI, "K": 1000, "M": 1000**2, "G": 1000**3}


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (256Mi, 1G, 1048576) in bytes."""
    for suffix in sorted(UNITS, key=len, reverse=True):
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * UNITS[suffix])
    return int(quantity)


def container_memory(node: RealNode, container_id: str) -> tuple[int, int]:
    """(peak, rss) bytes of one container on real-0, from its cgroup v1 memory controller:
    memory.max_usage_in_bytes (peak charge, page cache included) and memory.stat total_rss."""
    root = Path("/sys/fs/cgroup/memory", node.cgroup, "kubepods")
    cid = container_id.removeprefix("containerd://")
    found = [d for d in root.rglob(cid) if d.is_dir()]
    assert len(found) == 1, (cid, found)
    peak = int((found[0] / "memory.max_usage_in_bytes").read_text())
    stat = dict(line.split() for line in (found[0] / "memory.stat").read_text().splitlines())
    return peak, int(stat["total_rss"])


# From a busybox pod: the first line of GET /v2/health/live on HOST:PORT for each port, three tries each
# (nc -w 3: a dropped connection times out, a refused one ends at once; both print "-").
PROBE_PORTS = """
for port in {ports}; do
  for i in 1 2 3; do
    line=$(printf 'GET /v2/health/live HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} $port 2>/dev/null | head -1)
    echo "$port ${{line:--}}"
  done
done
"""
# The same from a Python container (router, sidecar): urllib, one try per port.
PY_PROBE = """
import sys, urllib.request
for port in sys.argv[2:]:
    try:
        with urllib.request.urlopen(f"http://{sys.argv[1]}:{port}/v2/health/live", timeout=5) as r:
            print(port, r.status)
    except OSError as error:
        print(port, type(getattr(error, "reason", error)).__name__)
"""


def py_probe(cluster: Cluster, pod: str, container: str, host: str, *ports: int) -> dict[str, str]:
    """What a Python container of `pod` gets from GET /v2/health/live on HOST:PORT, per port."""
    proc = cluster.kubectl(
        "-n", GRAPH_NAMESPACE, "exec", pod, "-c", container, "--",
        "python3", "-c", PY_PROBE, host, *map(str, ports),
        timeout=60,
    )  # fmt: skip
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line)


@pytest.mark.timeout(2400)  # the first test builds and loads the images when they are absent
class TestReadmeOnTheNode:
    """The README's `helm install` and `kubectl apply -f examples/quickstart.yaml`, unchanged:
    what it runs, what it answers, what it reports, the NetworkPolicy, the memory it uses."""

    def test_operator_runs_in_cluster_and_its_webhook_refuses_a_bad_graph(
        self, cluster: Cluster, real_node: RealNode, release: str
    ) -> None:
        pods = cluster.kubectl_json("-n", release, "get", "pods")["items"]
        assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
        pod = pods[0]
        assert pod["spec"]["nodeName"] == real_node.name
        assert pod["spec"]["serviceAccountName"] == "modulemesh"
        status = pod["status"]["containerStatuses"][0]
        assert status["ready"] is True
        assert status["image"].startswith("ghcr.io/modulemesh/modulemesh:")

        bad = QUICKSTART.read_text().replace("module: classifier", "module: clasifier")

        def refused() -> str | None:
            proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=bad, check=False)
            return proc.stderr if proc.returncode != 0 else None

        # The operator sets its webhook's CA bundle once it serves; until then the chart's
        # failurePolicy (Ignore) admits.
        stderr = wait_until(refused, timeout=60, interval=1.0, message="the webhook refuses")
        assert 'admission webhook "modulegraphs.modulemesh.io" denied' in stderr, stderr
        assert "spec.routing.nodes[0].steps[1].module" in stderr, stderr

    @pytest.mark.timeout(READY_TIMEOUT_S + 300)
    def test_quickstart_runs_on_the_real_node_and_is_ready(
        self, cluster: Cluster, real_node: RealNode, quickstart: dict[str, Any]
    ) -> None:
        """Every pod of the graph runs on real-0 with all containers ready; the classifier
        (gpu: 1) got one of real-0's GPUs, runs the GPU runtime image, which found no CUDA
        and serves on the CPU provider, and says so."""
        assert quickstart["status"]["modulesReady"] == "2/2"
        pods = graph_pods(cluster, GRAPH_NAMESPACE, "quickstart")
        components = sorted(p["metadata"]["labels"].get(MODULE_LABEL, "router") for p in pods)
        assert components == ["classifier", "embedder", "router"], components
        for pod in pods:
            assert pod["spec"]["nodeName"] == real_node.name, pod["metadata"]["name"]
            assert pod["status"]["phase"] == "Running"
            assert all(c["ready"] for c in pod["status"]["containerStatuses"]), pod["status"]
        classifier = next(
            p for p in pods if p["metadata"]["labels"].get(MODULE_LABEL) == "classifier"
        )
        runtime = next(c for c in classifier["spec"]["containers"] if c["name"] == "runtime")
        assert runtime["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert runtime["image"].startswith("ghcr.io/modulemesh/modulemesh-runtime-gpu:")
        assert "--model=/opt/modulemesh/examples/models/classifier-a.onnx" in runtime["args"]
        log = cluster.kubectl(
            "-n", GRAPH_NAMESPACE, "logs", classifier["metadata"]["name"], "-c", "runtime"
        ).stdout
        assert "on CPUExecutionProvider" in log and "'CUDAExecutionProvider'" in log, log
        modules = {m["name"]: m for m in quickstart["status"]["modules"]}
        assert modules["classifier"]["gpus"] == 1

    def test_the_router_service_answers_as_modulemesh_run_does(
        self, router_port: int, tmp_path: Path
    ) -> None:
        """The same input through `kubectl port-forward` to the router's Service and through
        `modulemesh run` of the same YAML: the same numbers, by JSON and by tritonclient."""
        examples = tmp_path / "examples"
        examples.mkdir()
        # As in the repository: modulemesh run builds the models next to build_models.py.
        for name in ("quickstart.yaml", "build_models.py"):
            (examples / name).write_text((EXAMPLES / name).read_text())
        local = LocalRun(examples / "quickstart.yaml", examples)
        try:
            local.wait_ready()
            expected = infer_json(f"http://127.0.0.1:{local.port}", "quickstart", {"input": X})
        finally:
            local.stop()
        got = infer_json(f"http://127.0.0.1:{router_port}", "quickstart", {"input": X})
        assert set(got) == {"probabilities"}
        np.testing.assert_allclose(
            got["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-6
        )

        client = triton.InferenceServerClient(f"127.0.0.1:{router_port}")
        try:
            assert client.is_model_ready("quickstart")
            tensor = triton.InferInput("input", list(X.shape), "FP32")
            tensor.set_data_from_numpy(X, binary_data=True)
            wanted = triton.InferRequestedOutput("probabilities", binary_data=True)
            result = client.infer("quickstart", [tensor], outputs=[wanted])
        finally:
            client.close()
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-5, atol=1e-6
        )

    def test_module_envelopes_reach_the_status_and_modulemesh_status(
        self, cluster: Cluster, router_port: int
    ) -> None:
        """Traffic through the router gives each module an envelope that the in-cluster
        operator copies into the ModuleGraph's status, and `modulemesh status` prints it."""
        for _ in range(20):
            infer_json(f"http://127.0.0.1:{router_port}", "quickstart", {"input": X})

        def envelopes() -> dict[str, dict[str, Any]] | None:
            graph = cluster.kubectl_json("-n", GRAPH_NAMESPACE, "get", "mg", "quickstart")
            found = {
                m["name"]: m["envelope"]
                for m in graph["status"].get("modules", [])
                if (m.get("envelope") or {}).get("updated")
                and (m["envelope"].get("requestRate") or 0) > 0
            }
            return found if set(found) == {"embedder", "classifier"} else None

        found = wait_until(envelopes, timeout=90, interval=2.0, message="module envelopes")
        for name, envelope in found.items():
            assert envelope["state"] == "Healthy", (name, envelope)
            assert envelope["p99Ms"] is not None and envelope["p99Ms"] > 0, (name, envelope)
        graph = cluster.kubectl_json("-n", GRAPH_NAMESPACE, "get", "mg", "quickstart")
        modules = {m["name"]: m for m in graph["status"]["modules"]}
        # The classifier's GPU runtime found no CUDA: it serves on the CPU and the graph says so.
        assert modules["classifier"]["provider"] == "CPUExecutionProvider", modules
        degraded = condition(graph, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "GPUFallbackToCPU"), degraded
        assert "classifier" in degraded["message"], degraded
        assert condition(graph, "Ready")["status"] == "True"

        status = subprocess.run(
            [sys.executable, "-m", "modulemesh", "status", "quickstart",
             "-n", GRAPH_NAMESPACE, "--kubeconfig", str(cluster.kubeconfig)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        rows = {line.split()[0]: line.split() for line in status.stdout.splitlines() if line}
        for name in ("embedder", "classifier"):
            assert name in rows, status.stdout
            assert "Healthy" in rows[name], status.stdout
        assert "CPUExecutionProvider" in rows["classifier"], status.stdout

    def test_every_container_uses_less_memory_than_it_requests(
        self, cluster: Cluster, real_node: RealNode, release: str, router_port: int
    ) -> None:
        """After concurrent traffic (8 clients, 64-row requests), each container's peak
        memory in its cgroup (runtime, sidecar, router, operator) is within its request; the
        figures are in docs/operations.md ("Memory")."""
        x = np.repeat(X, 16, axis=0)
        deadline = time.monotonic() + 5

        def load(_: int) -> int:
            sent = 0
            while time.monotonic() < deadline:
                infer_json(f"http://127.0.0.1:{router_port}", "quickstart", {"input": x})
                sent += 1
            return sent

        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(load, range(8))) > 8
        pods = graph_pods(cluster, GRAPH_NAMESPACE, "quickstart")
        pods += cluster.kubectl_json("-n", release, "get", "pods")["items"]
        seen = []
        for pod in pods:
            requests = {
                c["name"]: c["resources"]["requests"]["memory"] for c in pod["spec"]["containers"]
            }
            for status in pod["status"]["containerStatuses"]:
                peak, rss = container_memory(real_node, status["containerID"])
                request = memory_bytes(requests[status["name"]])
                seen.append((pod["metadata"]["name"], status["name"], peak // MEBI, rss // MEBI,
                             request // MEBI))  # fmt: skip
        assert sorted(c for _, c, *_ in seen) == [
            "operator", "router", "runtime", "runtime", "sidecar", "sidecar"
        ], seen  # fmt: skip
        print("pod container peak_MiB rss_MiB request_MiB", *seen, sep="\n")
        over = [row for row in seen if row[2] > row[4]]
        assert over == [], over

    def test_only_the_router_reaches_a_module_and_nobody_its_runtime(
        self, cluster: Cluster, real_node: RealNode, quickstart: dict[str, Any]
    ) -> None:
        """The graph's NetworkPolicy, enforced by kube-router on real-0: a module's sidecar
        port answers the router only; its runtime port answers nobody outside the pod."""
        pods = graph_pods(cluster, GRAPH_NAMESPACE, "quickstart")
        embedder = next(p for p in pods if p["metadata"]["labels"].get(MODULE_LABEL) == "embedder")
        router = next(p for p in pods if MODULE_LABEL not in p["metadata"]["labels"])
        ip = embedder["status"]["podIP"]

        # The router (admitted by the policy) is answered by the sidecar; the runtime listens
        # on 127.0.0.1 only, so even the router cannot reach it.
        from_router = py_probe(cluster, router["metadata"]["name"], "router", ip, 8080, 8081)
        assert from_router == {"8080": "200", "8081": "ConnectionRefusedError"}, from_router
        # Inside the module's pod the runtime answers: it runs, it is only unreachable.
        inside = py_probe(cluster, embedder["metadata"]["name"], "sidecar", "127.0.0.1", 8081)
        assert inside == {"8081": "200"}, inside

        # A throwaway pod in the same namespace reaches neither port.
        logs = client_logs(
            cluster,
            real_node,
            GRAPH_NAMESPACE,
            "netpol-probe",
            PROBE_PORTS.format(host=ip, ports="8080 8081"),
        )
        try:
            answers = [line.split(" ", 1) for line in logs.splitlines() if line.strip()]
            assert len(answers) == 6, logs
            assert all(answer == "-" for _, answer in answers), logs
        finally:
            cluster.kubectl("-n", GRAPH_NAMESPACE, "delete", "pod", "netpol-probe", check=False)


PHI_GATE = EXAMPLES / "phi-gate.yaml"


def phi_gate_on_one_node() -> str:
    """examples/phi-gate.yaml fitted to real-0, the one real node (two CPUs, region eu-west):
    each module asks 200m CPU instead of 1 (three times 1 CPU plus sidecars and the router do
    not fit) and classifier-us runs in eu-west (there is no real us-east node). What the gate
    enforces in the cluster is unchanged: classifier-us is not cleared for phi, its fallback
    classifier-eu is."""
    text = PHI_GATE.read_text()
    fitted = text.replace('cpu: "1"', "cpu: 200m").replace("region: us-east", "region: eu-west")
    assert fitted.count("cpu: 200m") == 3 and "us-east" not in fitted, fitted
    return fitted


def module_pod(cluster: Cluster, graph: str, module: str) -> dict[str, Any]:
    pods = [
        p
        for p in graph_pods(cluster, GRAPH_NAMESPACE, graph)
        if p["metadata"]["labels"].get(MODULE_LABEL) == module
        and not p["metadata"].get("deletionTimestamp")
    ]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def router_pod(cluster: Cluster, graph: str) -> str:
    pods = [
        p
        for p in graph_pods(cluster, GRAPH_NAMESPACE, graph)
        if MODULE_LABEL not in p["metadata"]["labels"]
    ]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return str(pods[0]["metadata"]["name"])


# Run in a module pod's sidecar container: the runtime's GET /stats on 127.0.0.1:8081.
RUNTIME_STATS = """
import json, urllib.request
with urllib.request.urlopen("http://127.0.0.1:8081/stats", timeout=5) as r:
    print(json.dumps(json.load(r)))
"""


def runtime_rows(cluster: Cluster, graph: str, module: str) -> int:
    """Rows the module's runtime has served (its /stats, read inside the pod)."""
    pod = module_pod(cluster, graph, module)["metadata"]["name"]
    proc = cluster.kubectl(
        "-n", GRAPH_NAMESPACE, "exec", pod, "-c", "sidecar", "--", "python3", "-c", RUNTIME_STATS
    )
    return int(json.loads(proc.stdout)["rows"])


def audit_records(cluster: Cluster, pod: str, container: str) -> list[dict[str, Any]]:
    """The audit records (JSON lines with kind audit) in a container's log."""
    log = cluster.kubectl("-n", GRAPH_NAMESPACE, "logs", pod, "-c", container).stdout
    records = []
    for line in log.splitlines():
        if '"kind":"audit"' in line.replace(" ", ""):
            try:
                records.append(json.loads(line[line.index("{") :]))
            except ValueError:
                continue
    return records


@pytest.fixture(scope="class")
def phi_triage(cluster: Cluster, release: str) -> Iterator[dict[str, Any]]:
    """examples/phi-gate.yaml (fitted to one node) applied, Ready; deleted after the class."""
    text = phi_gate_on_one_node()
    apply_example(cluster, PHI_GATE, stdin=text)
    try:
        yield wait_ready(cluster, GRAPH_NAMESPACE, "phi-triage")
    finally:
        delete_example(cluster, "phi-triage", PHI_GATE, stdin=text)


@pytest.fixture(scope="class")
def phi_router(cluster: Cluster, phi_triage: dict[str, Any]) -> Iterator[str]:
    with port_forward(cluster, GRAPH_NAMESPACE, "svc/phi-triage-router", 8080) as port:
        yield f"http://127.0.0.1:{port}"


def post_infer(base: str, model: str, x: np.ndarray, headers: dict[str, str]) -> httpx.Response:
    body = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": x.ravel().tolist(),
            }
        ]
    }
    return httpx.post(f"{base}/v2/models/{model}/infer", json=body, headers=headers, timeout=30)


class TestPrivacyOnTheNode:
    """examples/phi-gate.yaml in the cluster: a request tagged phi never reaches a module pod
    without the clearance; the records of the router and of that pod's sidecar say so."""

    @pytest.mark.timeout(READY_TIMEOUT_S + 300)
    def test_phi_requests_go_to_the_cleared_fallback_only(
        self, cluster: Cluster, phi_router: str
    ) -> None:
        us_before = runtime_rows(cluster, "phi-triage", "classifier-us")
        eu_before = runtime_rows(cluster, "phi-triage", "classifier-eu")
        for _ in range(5):
            response = post_infer(phi_router, "phi-triage", X, {"x-data-class": "phi"})
            assert response.status_code == 200, response.text
        untagged = post_infer(phi_router, "phi-triage", X, {})
        assert untagged.status_code == 200, untagged.text
        # Only the untagged request's rows reached classifier-us; the PHI ones went to
        # classifier-eu.
        assert runtime_rows(cluster, "phi-triage", "classifier-us") - us_before == len(X)
        assert runtime_rows(cluster, "phi-triage", "classifier-eu") - eu_before == 5 * len(X)

        router = router_pod(cluster, "phi-triage")
        records = audit_records(cluster, router, "router")
        denied = [
            r
            for r in records
            if r["module"] == "classifier-us" and r["decision"] == "deny" and "phi" in r["tags"]
        ]
        allowed = [
            r
            for r in records
            if r["module"] == "classifier-eu" and r["decision"] == "allow" and "phi" in r["tags"]
        ]
        assert len(denied) >= 5, records
        assert len(allowed) >= 5, records
        assert all(r["graph"] == "phi-triage" for r in denied + allowed), records

    def test_a_phi_request_sent_to_the_uncleared_module_is_denied_by_its_sidecar(
        self, cluster: Cluster, phi_triage: dict[str, Any]
    ) -> None:
        """Straight from the router's pod (the one peer the NetworkPolicy admits) to
        classifier-us's sidecar: 403, a deny record in that pod's log, and its runtime never
        sees the request."""
        target = module_pod(cluster, "phi-triage", "classifier-us")
        before = runtime_rows(cluster, "phi-triage", "classifier-us")
        script = (
            "import json, sys, urllib.request, urllib.error\n"
            "body = json.dumps({'inputs': [{'name': 'input', 'datatype': 'FP32', "
            "'shape': [1, 8], 'data': [0.5] * 8}]}).encode()\n"
            "req = urllib.request.Request(sys.argv[1], data=body, headers={"
            "'content-type': 'application/json', 'x-data-class': 'phi'})\n"
            "try:\n"
            "    print(urllib.request.urlopen(req, timeout=10).status)\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(e.code)\n"
        )
        url = f"http://{target['status']['podIP']}:8080/v2/models/classifier-us/infer"
        proc = cluster.kubectl(
            "-n", GRAPH_NAMESPACE, "exec", router_pod(cluster, "phi-triage"), "-c", "router",
            "--", "python3", "-c", script, url,
        )  # fmt: skip
        assert proc.stdout.strip() == "403", proc.stdout
        records = audit_records(cluster, target["metadata"]["name"], "sidecar")
        denials = [r for r in records if r["decision"] == "deny" and "phi" in r["tags"]]
        assert denials and denials[-1]["module"] == "classifier-us", records
        assert denials[-1]["component"] == "sidecar", denials[-1]
        assert runtime_rows(cluster, "phi-triage", "classifier-us") == before

    @pytest.mark.timeout(400)
    def test_deleting_a_module_pod_under_load_fails_no_request(
        self, cluster: Cluster, phi_router: str
    ) -> None:
        """classifier-us (fallback classifier-eu) loses its pod while untagged requests flow
        through the router: no request fails, the graph's Ready goes False naming the module
        until the Deployment's new pod is ready, then True again."""
        results: list[int | str] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=10) as client:
                body = {
                    "inputs": [
                        {"name": "input", "datatype": "FP32", "shape": [1, 16],
                         "data": X[0].tolist()}
                    ]
                }  # fmt: skip
                while not stop.is_set():
                    try:
                        r = client.post(f"{phi_router}/v2/models/phi-triage/infer", json=body)
                        results.append(r.status_code if r.status_code == 200 else r.text)
                    except httpx.HTTPError as error:
                        results.append(f"{type(error).__name__}: {error}")
                    time.sleep(0.05)

        workers = [threading.Thread(target=load, daemon=True) for _ in range(2)]
        for w in workers:
            w.start()
        try:
            time.sleep(2)
            victim = module_pod(cluster, "phi-triage", "classifier-us")["metadata"]["name"]
            cluster.kubectl("-n", GRAPH_NAMESPACE, "delete", "pod", victim, "--wait=false")
            seen: list[tuple[str, str, str]] = []

            def recovered() -> bool:
                graph = cluster.kubectl_json("-n", GRAPH_NAMESPACE, "get", "mg", "phi-triage")
                ready = condition(graph, "Ready")
                seen.append(
                    (ready.get("status", ""), ready.get("reason", ""), ready.get("message", ""))
                )
                went_down = any(s == "False" for s, _, _ in seen)
                return went_down and seen[-1][0] == "True"

            wait_until(recovered, timeout=240, interval=0.5, message="Ready False, then True")
            time.sleep(2)
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=30)
        failed = [r for r in results if r != 200]
        assert len(results) > 50, len(results)
        assert failed == [], failed[:5]
        down = [(s, reason, message) for s, reason, message in seen if s == "False"]
        assert any("classifier-us" in message for _, _, message in down), down
        assert module_pod(cluster, "phi-triage", "classifier-us")["metadata"]["name"] != victim


def small_graph(name: str) -> dict[str, Any]:
    """The quickstart's shape at 100m CPU per container, for many graphs at once."""
    small = {"cpu": "100m", "memory": "128Mi"}
    return {
        "apiVersion": "modulemesh.io/v1alpha1",
        "kind": "ModuleGraph",
        "metadata": {"name": name},
        "spec": {
            "modules": [
                {"name": "embedder", "model": {"path": "models/embedder.onnx"}, "resources": small},
                {"name": "classifier", "model": {"path": "models/classifier-a.onnx"},
                 "resources": small},
            ],
            "router": small,
            "routing": {
                "entry": "main",
                "nodes": [{"name": "main", "type": "sequence", "steps": [
                    {"module": "embedder", "inputs": {"input": "request.input"}},
                    {"module": "classifier", "inputs": {"input": "embedder.embedding"}},
                ]}],
            },
        },
    }  # fmt: skip


class TestOperatorRestartInTheCluster:
    """The chart's operator pod (on real-0) is deleted while 20 graphs are being applied: its
    Deployment brings a new one, which converges every graph with no duplicate and no orphan.
    The graphs' own pods go to the kwok nodes (their namespace is not bound to real-0)."""

    @pytest.mark.timeout(600)
    def test_operator_pod_deleted_mid_apply_converges(
        self, cluster: Cluster, real_node: RealNode, release: str, namespace: str
    ) -> None:
        [old] = cluster.kubectl_json("-n", release, "get", "pods")["items"]
        names = [f"g{i:02d}" for i in range(20)]
        cluster.apply([small_graph(n) for n in names], namespace)
        time.sleep(2.0)
        cluster.kubectl("-n", release, "delete", "pod", old["metadata"]["name"], "--wait=false")

        def replaced() -> bool:
            pods = cluster.kubectl_json("-n", release, "get", "pods")["items"]
            fresh = [p for p in pods if p["metadata"]["uid"] != old["metadata"]["uid"]]
            return any(
                all(c["ready"] for c in p["status"].get("containerStatuses", [{"ready": False}]))
                for p in fresh
            )

        wait_until(replaced, timeout=180, interval=1.0, message="a new operator pod ready")

        def converged() -> list[str] | None:
            graphs = cluster.kubectl_json("-n", namespace, "get", "mg")["items"]
            ready = [
                g["metadata"]["name"]
                for g in graphs
                if condition(g, "Ready").get("status") == "True"
                and g["status"].get("observedGeneration") == g["metadata"]["generation"]
            ]
            return ready if sorted(ready) == names else None

        try:
            wait_until(converged, timeout=360, interval=3.0, message="20 graphs Ready")
        except TimeoutError:
            listing = cluster.kubectl("-n", namespace, "get", "mg", check=False).stdout
            raise AssertionError(f"not every graph converged:\n{listing}") from None
        [new] = cluster.kubectl_json("-n", release, "get", "pods")["items"]
        assert new["spec"]["nodeName"] == real_node.name

        deployments = cluster.kubectl_json("-n", namespace, "get", "deployments")["items"]
        deployment_names = [d["metadata"]["name"] for d in deployments]
        assert len(deployment_names) == len(set(deployment_names)) == 60
        for d in deployments:
            refs = d["metadata"].get("ownerReferences", [])
            assert len(refs) == 1 and refs[0]["kind"] == "ModuleGraph", d["metadata"]
        for kind in ("services", "configmaps", "networkpolicies"):
            items = cluster.kubectl_json("-n", namespace, "get", kind, "-l", GRAPH_LABEL)["items"]
            owners = [i["metadata"]["labels"][GRAPH_LABEL] for i in items]
            assert set(owners) == set(names), (kind, sorted(owners))
        replicasets = cluster.kubectl_json("-n", namespace, "get", "replicasets")["items"]
        assert len(replicasets) == 60, "a re-applied template must not roll a new ReplicaSet"


# Run in a pod of the slim image: closed-loop requests to URL for SECONDS at most (until the
# file /tmp/stop appears), then a JSON line with the answers that were not 200 (status and
# text, or the connection error).
LOAD_SCRIPT = """
import json, os, sys, time, httpx
url, seconds = sys.argv[1], float(sys.argv[2])
body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.25] * 16}]}
ok, errors, end = 0, [], time.time() + seconds
with httpx.Client(timeout=10) as client:
    while time.time() < end and not os.path.exists("/tmp/stop"):
        try:
            r = client.post(url, json=body)
            if r.status_code == 200:
                ok += 1
            else:
                errors.append(f"{r.status_code} {r.text[:200]}")
        except httpx.HTTPError as e:
            errors.append(f"{type(e).__name__}: {e}")
        time.sleep(0.02)
print(json.dumps({"ok": ok, "failed": errors}))
"""
LOAD_SECONDS = 100


def rolling_graph() -> dict[str, Any]:
    """The quickstart at 200m CPU per container, named roll: a rolling update surges one new
    pod per Deployment, which must fit real-0's two CPUs beside the old ones."""
    doc: dict[str, Any] = yaml.safe_load(QUICKSTART.read_text())
    doc["metadata"]["name"] = "roll"
    for module in doc["spec"]["modules"]:
        module["resources"] = {**module.get("resources", {}), "cpu": "200m"}
    doc["spec"]["router"] = {"cpu": "200m"}
    return doc


class TestRollingUpdateOnTheNode:
    """A module's model version changes while a client in the cluster sends requests through
    the router's Service: the module's and the router's pods roll (readiness gates the new
    ones; the old ones keep serving through a preStop sleep until their endpoints are gone,
    then drain) and no request fails."""

    @pytest.mark.timeout(READY_TIMEOUT_S + LOAD_SECONDS + 200)
    def test_a_model_version_change_rolls_without_a_failed_request(
        self, cluster: Cluster, real_node: RealNode, release: str
    ) -> None:
        doc = rolling_graph()
        cluster.apply(doc, GRAPH_NAMESPACE)
        try:
            wait_ready(cluster, GRAPH_NAMESPACE, "roll")
            old = module_pod(cluster, "roll", "embedder")["metadata"]["name"]
            [operator] = cluster.kubectl_json("-n", release, "get", "pods")["items"]
            load = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "roll-load"},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "load",
                        "image": operator["spec"]["containers"][0]["image"],  # the slim image
                        "imagePullPolicy": "Never",
                        "command": ["python3", "-c", LOAD_SCRIPT,
                                    "http://roll-router:8080/v2/models/roll/infer",
                                    str(LOAD_SECONDS)],
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                    }],
                },
            }  # fmt: skip
            cluster.apply(load, GRAPH_NAMESPACE)
            wait_phase(cluster, GRAPH_NAMESPACE, "roll-load", {"Running"})
            time.sleep(8)
            started = time.monotonic()
            doc["spec"]["modules"][0]["version"] = "2"
            cluster.apply(doc, GRAPH_NAMESPACE)

            def rolled() -> bool:
                pods = graph_pods(cluster, GRAPH_NAMESPACE, "roll")
                embedders = [
                    p for p in pods if p["metadata"]["labels"].get(MODULE_LABEL) == "embedder"
                ]
                graph = cluster.kubectl_json("-n", GRAPH_NAMESPACE, "get", "mg", "roll")
                return (
                    len(pods) == 3
                    and [p["metadata"]["name"] for p in embedders] != [old]
                    and condition(graph, "Ready").get("status") == "True"
                    and graph["status"].get("observedGeneration") == graph["metadata"]["generation"]
                )

            wait_until(rolled, timeout=LOAD_SECONDS - 15, interval=1.0, message="the roll to end")
            took = time.monotonic() - started
            time.sleep(3)  # requests keep flowing to the rolled pods a little longer
            cluster.kubectl(
                "-n", GRAPH_NAMESPACE, "exec", "roll-load", "--",
                "python3", "-c", "open('/tmp/stop', 'w').close()",
            )  # fmt: skip
            done = wait_phase(cluster, GRAPH_NAMESPACE, "roll-load", {"Succeeded"}, timeout=60)
            assert done["status"]["phase"] == "Succeeded"
            log = cluster.kubectl("-n", GRAPH_NAMESPACE, "logs", "roll-load").stdout
            result = json.loads(log.strip().splitlines()[-1])
            assert result["ok"] > 500, result
            assert result["failed"] == [], (took, result)
            version = module_pod(cluster, "roll", "embedder")["spec"]["containers"][0]["args"]
            assert "--model-version=2" in version, version
        finally:
            cluster.kubectl("-n", GRAPH_NAMESPACE, "delete", "pod", "roll-load", check=False)
            cluster.kubectl("-n", GRAPH_NAMESPACE, "delete", "mg", "roll", "--wait=true",
                            check=False, timeout=120)  # fmt: skip
            wait_until(
                lambda: not graph_pods(cluster, GRAPH_NAMESPACE, "roll"),
                timeout=120,
                message="roll's pods to go",
            )
