"""Helpers for the tests on the real node real-0 (hack/cluster/node): starting it, pods pinned
to it, waiting for pod phases, and `kubectl port-forward` on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.cluster import (
    FIXTURE_OWNER,
    HACK_CLUSTER,
    Cluster,
    ClusterError,
    cluster_env,
    wait_until,
)

NODE_UP_TIMEOUT_S = 3600.0  # a cold build of the node's binaries can be part of the first start
# real-0's taints: its own, and the GPU taint it carries as a GPU node.
REAL_NODE_TOLERATIONS = [
    {"key": "modulemesh.io/real-node", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
]


@dataclass(frozen=True)
class RealNode:
    """The running real node: its name, network namespace, test image, cgroup and state paths."""

    name: str
    netns: str
    test_image: str
    cgroup: str
    state_dir: Path
    run_dir: Path


def node_script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`hack/cluster/node ARGS...`, output captured."""
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
    (egress selector, advertise address, admission plugins); given `cluster`, one that a test
    fixture started and that no other test session uses is restarted with them.
    """
    proc = node_script("up", timeout=NODE_UP_TIMEOUT_S)
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


def running_real_node(cluster: Cluster) -> Iterator[RealNode]:
    """The body of the module-scoped `real_node` fixture (conftest): the real node on the
    session's cluster, started when it is not running.

    A node started here is stopped afterwards, so the e2e tests that follow see the cluster as
    they found it; one that was already running (started by hand or by `up --real-node`) is
    left alone.
    """
    started_here = node_script("status", timeout=30).returncode != 0
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
        proc = node_script("down", timeout=180)
        if proc.returncode != 0:
            raise ClusterError(f"hack/cluster/node down failed: {proc.stderr.strip()}")


def busybox_pod(node: RealNode, name: str, command: str, **extra: Any) -> dict[str, Any]:
    """A pod of the node's busybox image pinned to the real node, never pulled."""
    spec: dict[str, Any] = {
        "nodeSelector": {"kubernetes.io/hostname": node.name},
        "tolerations": list(REAL_NODE_TOLERATIONS),
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


def wait_phase(
    cluster: Cluster, namespace: str, name: str, phases: set[str], timeout: float = 120
) -> dict[str, Any]:
    """Wait until the pod reaches one of `phases`; fail early with its events if it fails."""

    def probe() -> dict[str, Any] | None:
        pod: dict[str, Any] = cluster.kubectl_json("-n", namespace, "get", "pod", name)
        phase = pod.get("status", {}).get("phase", "")
        if phase in phases:
            return pod
        if phase == "Failed" and "Failed" not in phases:
            events = cluster.kubectl("-n", namespace, "get", "events", check=False).stdout
            raise AssertionError(f"pod {name} failed: {pod['status']}\n{events}")
        return None

    try:
        return wait_until(probe, timeout=timeout, message=f"pod {name} to be {sorted(phases)}")
    except TimeoutError:
        events = cluster.kubectl("-n", namespace, "get", "events", check=False).stdout
        raise AssertionError(f"pod {name} never reached {sorted(phases)}:\n{events}") from None


def client_logs(
    cluster: Cluster,
    node: RealNode,
    namespace: str,
    name: str,
    script: str,
    labels: dict[str, str] | None = None,
    timeout: float = 120,
) -> str:
    """Run a one-shot busybox pod on the real node; its logs once it succeeded."""
    pod = busybox_pod(node, name, script)
    pod["metadata"]["labels"] = dict(labels or {})
    cluster.apply(pod, namespace)
    wait_phase(cluster, namespace, name, {"Succeeded"}, timeout=timeout)
    return cluster.kubectl("-n", namespace, "logs", name).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def port_forward(
    cluster: Cluster, namespace: str, target: str, remote_port: int, timeout: float = 60
) -> Iterator[int]:
    """`kubectl port-forward TARGET` on 127.0.0.1; yields the local port once it accepts."""
    port = free_port()
    forward = subprocess.Popen(
        [
            str(cluster.kubectl_path), "--kubeconfig", str(cluster.kubeconfig),
            "-n", namespace, "port-forward", "--address", "127.0.0.1",
            target, f"{port}:{remote_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:

        def listening() -> bool:
            if forward.poll() is not None:
                raise AssertionError(
                    f"kubectl port-forward {target} exited: {forward.stderr.read() if forward.stderr else ''}"
                )
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, timeout=timeout, message=f"port-forward to {target} to listen")
        yield port
    finally:
        forward.terminate()
        try:
            forward.wait(timeout=30)
        except subprocess.TimeoutExpired:
            forward.kill()
            forward.wait(timeout=10)
