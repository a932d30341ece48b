"""Smoke tests of the local control plane: scheduling on simulated GPU nodes, regions, garbage
collection, PodSecurity admission, ServiceAccount tokens and RBAC, all against the real
kube-apiserver, kube-scheduler and kube-controller-manager built by hack/cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster import Cluster, ClusterError, cluster_env, wait_until

pytestmark = pytest.mark.e2e

IMAGE = "registry.k8s.io/pause:3.10"
GPU_TOLERATION = {
    "key": "nvidia.com/gpu",
    "operator": "Exists",
    "effect": "NoSchedule",
}


def deployment(
    name: str,
    *,
    replicas: int = 1,
    gpus: int = 0,
    region: str | None = None,
    tolerate_gpu: bool = False,
) -> dict[str, Any]:
    """A Deployment of pause pods, optionally asking for GPUs and pinned to a region."""
    resources: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "64Mi"}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    pod_spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": IMAGE, "resources": resources}],
        "tolerations": [GPU_TOLERATION] if (gpus or tolerate_gpu) else [],
    }
    if region:
        pod_spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "topology.kubernetes.io/region",
                                    "operator": "In",
                                    "values": [region],
                                }
                            ]
                        }
                    ]
                }
            }
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


def pods(cluster: Cluster, namespace: str, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "-n", namespace, "get", "pods", "-l", f"app={app}"
    )["items"]
    return items


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond.get("type") == kind:
            return dict(cond)
    return None


def rollout(cluster: Cluster, namespace: str, name: str, timeout: int = 90) -> None:
    cluster.kubectl(
        "-n",
        namespace,
        "rollout",
        "status",
        f"deployment/{name}",
        f"--timeout={timeout}s",
        timeout=timeout + 15,
    )


def node_labels(cluster: Cluster, node: str) -> dict[str, str]:
    labels: dict[str, str] = cluster.kubectl_json("get", "node", node)["metadata"]["labels"]
    return labels


def test_nodes_are_simulated_gpu_and_cpu_nodes_in_two_regions(cluster: Cluster) -> None:
    """kwok keeps every simulated node Ready; GPU nodes advertise nvidia.com/gpu and the taint."""
    nodes = cluster.kubectl_json("get", "nodes")["items"]
    ready = {
        n["metadata"]["name"]
        for n in nodes
        if (condition(n, "Ready") or {}).get("status") == "True"
    }
    assert ready == {n["metadata"]["name"] for n in nodes}
    gpu = [n for n in nodes if n["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"]
    cpu = [n for n in nodes if n not in gpu]
    assert gpu and cpu
    assert {n["metadata"]["labels"]["topology.kubernetes.io/region"] for n in gpu} == {
        "eu-west",
        "us-east",
    }
    for n in gpu:
        assert n["status"]["allocatable"]["nvidia.com/gpu"] == "4"
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in n["spec"][
            "taints"
        ]
    for n in cpu:
        assert "nvidia.com/gpu" not in n["status"]["allocatable"]


def test_gpu_deployment_lands_on_gpu_node_and_becomes_ready(
    cluster: Cluster, namespace: str
) -> None:
    """A Deployment asking for one nvidia.com/gpu (with the toleration) is scheduled onto a GPU
    node and its pod goes Running and Ready through kwok's stages."""
    cluster.apply(deployment("gpu-one", gpus=1), namespace)
    rollout(cluster, namespace, "gpu-one")
    [pod] = pods(cluster, namespace, "gpu-one")
    assert pod["status"]["phase"] == "Running"
    assert (condition(pod, "Ready") or {}).get("status") == "True"
    labels = node_labels(cluster, pod["spec"]["nodeName"])
    assert labels["nvidia.com/gpu.present"] == "true"


def test_more_gpus_than_any_node_has_stays_pending(cluster: Cluster, namespace: str) -> None:
    """A pod asking for more GPUs than any node has stays Pending; the scheduler says why:
    `Insufficient nvidia.com/gpu` on the PodScheduled condition and a FailedScheduling event."""
    cluster.apply(deployment("gpu-greedy", gpus=8), namespace)

    def unschedulable() -> dict[str, Any] | None:
        for pod in pods(cluster, namespace, "gpu-greedy"):
            cond = condition(pod, "PodScheduled")
            if cond and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
                return pod
        return None

    pod = wait_until(unschedulable, timeout=60, message="the scheduler to reject the pod")
    cond = condition(pod, "PodScheduled")
    assert cond is not None
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")

    def failed_scheduling_event() -> str | None:
        events = cluster.kubectl_json(
            "-n",
            namespace,
            "get",
            "events",
            "--field-selector",
            f"involvedObject.name={pod['metadata']['name']},reason=FailedScheduling",
        )["items"]
        return next((e["message"] for e in events), None)

    message = wait_until(failed_scheduling_event, timeout=30, message="a FailedScheduling event")
    assert "Insufficient nvidia.com/gpu" in message


@pytest.mark.parametrize("region", ["eu-west", "us-east"])
def test_region_node_affinity_lands_in_that_region(
    cluster: Cluster, namespace: str, region: str
) -> None:
    """A required node affinity on topology.kubernetes.io/region places every replica (GPU or
    CPU nodes alike) in that region."""
    cluster.apply(deployment("regional", replicas=4, region=region, tolerate_gpu=True), namespace)
    rollout(cluster, namespace, "regional")
    placed = pods(cluster, namespace, "regional")
    assert len(placed) == 4
    for pod in placed:
        labels = node_labels(cluster, pod["spec"]["nodeName"])
        assert labels["topology.kubernetes.io/region"] == region


def test_deleting_owner_configmap_collects_its_dependent(cluster: Cluster, namespace: str) -> None:
    """The garbage collector deletes a ConfigMap whose ownerReference points at a deleted
    ConfigMap."""
    cluster.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}, namespace
    )
    uid = cluster.kubectl_json("-n", namespace, "get", "configmap", "owner")["metadata"]["uid"]
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "dependent",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
                ],
            },
            "data": {"k": "v"},
        },
        namespace,
    )
    cluster.kubectl("-n", namespace, "delete", "configmap", "owner", "--cascade=background")

    def dependent_gone() -> bool:
        proc = cluster.kubectl("-n", namespace, "get", "configmap", "dependent", check=False)
        return proc.returncode != 0 and "NotFound" in proc.stderr

    wait_until(dependent_gone, timeout=60, message="the dependent ConfigMap to be collected")


def test_deleting_deployment_collects_replicasets_and_pods(
    cluster: Cluster, namespace: str
) -> None:
    """Deleting a Deployment in the background garbage-collects its ReplicaSet and pods."""
    cluster.apply(deployment("web", replicas=2), namespace)
    rollout(cluster, namespace, "web")
    assert len(pods(cluster, namespace, "web")) == 2
    cluster.kubectl("-n", namespace, "delete", "deployment", "web", "--cascade=background")

    def collected() -> bool:
        rs = cluster.kubectl_json("-n", namespace, "get", "replicasets", "-l", "app=web")["items"]
        return not rs and not pods(cluster, namespace, "web")

    wait_until(collected, timeout=90, message="the ReplicaSet and pods to be collected")


def _pod(name: str, *, privileged: bool) -> dict[str, Any]:
    security: dict[str, Any]
    if privileged:
        security = {"privileged": True}
    else:
        security = {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": IMAGE, "securityContext": security}]},
    }


def test_restricted_namespace_refuses_privileged_pod(cluster: Cluster) -> None:
    """PodSecurity admission: a namespace labelled enforce=restricted refuses a privileged pod and
    admits a compliant one, while an unlabelled namespace admits the privileged pod."""
    restricted = cluster.create_namespace(
        "e2e-restricted", labels={"pod-security.kubernetes.io/enforce": "restricted"}
    )
    open_ns = cluster.create_namespace("e2e-open")
    try:
        with pytest.raises(ClusterError) as refused:
            cluster.apply(_pod("privileged", privileged=True), restricted)
        message = str(refused.value)
        assert "violates PodSecurity" in message
        assert "restricted" in message
        assert "privileged" in message

        cluster.apply(_pod("compliant", privileged=False), restricted)
        cluster.kubectl(
            "-n",
            restricted,
            "wait",
            "--for=condition=Ready",
            "pod/compliant",
            "--timeout=60s",
            timeout=75,
        )

        cluster.apply(_pod("privileged", privileged=True), open_ns)
        cluster.kubectl("-n", open_ns, "get", "pod", "privileged")
    finally:
        cluster.delete_namespace(restricted)
        cluster.delete_namespace(open_ns)


def _token_kubeconfig(cluster: Cluster, token: str, path: Path) -> Path:
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    cluster_entry = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster_entry],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [
                    {"name": "sa", "context": {"cluster": cluster_entry["name"], "user": "sa"}}
                ],
                "current-context": "sa",
            }
        )
    )
    return path


def test_service_account_token_authenticates_and_rbac_limits_it(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """`kubectl create token` issues a token the API server accepts for the ServiceAccount; RBAC
    allows exactly what its Role grants. The controller-manager publishes kube-root-ca.crt."""
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "reader")
    cluster.kubectl(
        "-n",
        namespace,
        "create",
        "role",
        "configmap-reader",
        "--verb=get,list",
        "--resource=configmaps",
    )
    cluster.kubectl(
        "-n",
        namespace,
        "create",
        "rolebinding",
        "reader",
        "--role=configmap-reader",
        f"--serviceaccount={namespace}:reader",
    )
    token = cluster.kubectl(
        "-n", namespace, "create", "token", "reader", "--duration=10m"
    ).stdout.strip()
    assert token.count(".") == 2  # a signed JWT

    kubeconfig = _token_kubeconfig(cluster, token, tmp_path / "sa.kubeconfig")

    def as_sa(*args: str) -> Any:
        return cluster.kubectl("--kubeconfig", str(kubeconfig), *args, check=False)

    whoami = as_sa("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.returncode == 0, whoami.stderr
    assert whoami.stdout == f"system:serviceaccount:{namespace}:reader"

    allowed = as_sa("auth", "can-i", "list", "configmaps", "-n", namespace)
    assert allowed.stdout.strip() == "yes"
    assert as_sa("-n", namespace, "get", "configmaps").returncode == 0

    denied = as_sa("auth", "can-i", "create", "deployments", "-n", namespace)
    assert denied.stdout.strip() == "no"
    forbidden = as_sa("-n", namespace, "get", "secrets")
    assert forbidden.returncode != 0
    assert "Forbidden" in forbidden.stderr

    bad = _token_kubeconfig(cluster, token[:-4] + "AAAA", tmp_path / "bad.kubeconfig")
    rejected = cluster.kubectl("--kubeconfig", str(bad), "get", "configmaps", check=False)
    assert rejected.returncode != 0
    assert "Unauthorized" in rejected.stderr

    wait_until(
        lambda: (
            cluster.kubectl(
                "-n", namespace, "get", "configmap", "kube-root-ca.crt", check=False
            ).returncode
            == 0
        ),
        timeout=30,
        message="kube-root-ca.crt in the namespace",
    )


def test_network_policy_is_stored(cluster: Cluster, namespace: str) -> None:
    """NetworkPolicy objects are accepted and stored (nothing enforces them here)."""
    cluster.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
        namespace,
    )
    stored = cluster.kubectl_json("-n", namespace, "get", "networkpolicy", "deny-all")
    assert stored["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_every_binary_is_built_at_its_pinned_version(cluster: Cluster) -> None:
    """The cache holds what hack/cluster/build promises, each reporting the pinned release."""
    bin_dir = Path(cluster_env()["BIN_DIR"])
    expected = {
        "kube-apiserver": "v1.36.3",
        "kube-controller-manager": "v1.36.3",
        "kube-scheduler": "v1.36.3",
        "etcd": "3.6.8",
        "kwok": "v0.8.0",
        "kwokctl": "v0.8.0",
    }
    for name, version in expected.items():
        proc = subprocess.run(
            [str(bin_dir / name), "--version"], capture_output=True, text=True, timeout=30
        )
        assert version in proc.stdout + proc.stderr, (name, proc.stdout, proc.stderr)
