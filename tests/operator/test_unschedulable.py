"""What the Scheduled condition says about a pod the scheduler cannot place: the scheduler's
message once (no doubled period), then what would fit. A pod larger than every node is told
to ask for less (with the largest node's figure), not to add GPU nodes of the same size; a
CPU-only module short of CPU gets CPU advice, never GPU advice; a placement mismatch names
placement. Scheduler messages are kube-scheduler's own wording; nodes are the API's JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from modulemesh.api import ModuleGraph
from modulemesh.operator.observe import Observation, compute_status
from modulemesh.operator.placement import pod_requests, unschedulable_advice

GPU_SHORT = (
    "0/6 nodes are available: 2 node(s) had untolerated taint {node.kubernetes.io/x: }, "
    "4 Insufficient nvidia.com/gpu. preemption: 0/6 nodes are available: "
    "6 No preemption victims found for incoming pod."
)
CPU_SHORT = (
    "0/6 nodes are available: 2 Insufficient cpu, 4 node(s) had untolerated taint "
    "{nvidia.com/gpu: present}. preemption: 0/6 nodes are available: "
    "2 No preemption victims found for incoming pod, 4 Preemption is not helpful for scheduling."
)
AFFINITY = (
    "0/6 nodes are available: 6 node(s) didn't match Pod's node affinity/selector. "
    "preemption: 0/6 nodes are available: 6 Preemption is not helpful for scheduling."
)


def node(name: str, cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    allocatable = {"cpu": cpu, "memory": memory, "pods": "110"}
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
    return {"metadata": {"name": name}, "status": {"allocatable": allocatable}}


NODES = [
    node("cpu-0", "16", "64Gi"),
    node("gpu-0", "32", "256Gi", 4),
    node("gpu-1", "32", "256Gi", 4),
]


def pod(**runtime: Any) -> dict[str, Any]:
    """A module pod: the runtime with ``runtime`` resources, and the sidecar's small request."""
    return {
        "spec": {
            "containers": [
                {"name": "runtime", "resources": runtime},
                {"name": "sidecar", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
            ]
        }
    }


# --- what a pod asks for ------------------------------------------------------------------


def test_pod_requests_sum_containers_and_take_limits_for_extended_resources() -> None:
    asked = pod_requests(
        pod(requests={"cpu": "2", "memory": "4Gi"}, limits={"nvidia.com/gpu": "8", "cpu": "4"})
    )
    assert asked == {
        "cpu": Decimal("2.1"),
        "memory": Decimal(4 * 2**30 + 128 * 2**20),
        "nvidia.com/gpu": Decimal(8),
    }


# --- larger than any node -----------------------------------------------------------------


def test_more_gpus_than_any_node_has_says_ask_for_less_not_add_gpu_nodes() -> None:
    advice = unschedulable_advice(
        GPU_SHORT, pod_requests(pod(limits={"nvidia.com/gpu": "8"})), NODES
    )
    assert ".." not in advice
    assert advice.startswith(GPU_SHORT.rstrip("."))
    assert "each pod asks for 8 nvidia.com/gpu and the largest node has 4" in advice
    assert "lower resources.gpu to at most 4" in advice
    assert "GPU nodes in the allowed region" not in advice


def test_more_memory_than_any_node_names_memory() -> None:
    message = "0/3 nodes are available: 3 Insufficient memory."
    advice = unschedulable_advice(message, pod_requests(pod(requests={"memory": "300Gi"})), NODES)
    assert "lower resources.memory to at most 256Gi" in advice and ".." not in advice


# --- capacity -----------------------------------------------------------------------------


def test_gpu_capacity_short_but_a_node_could_fit_it() -> None:
    advice = unschedulable_advice(
        GPU_SHORT, pod_requests(pod(limits={"nvidia.com/gpu": "2"})), NODES
    )
    assert "free or add nvidia.com/gpu capacity (GPU nodes in the allowed region)" in advice
    assert "or lower its replicas" in advice and ".." not in advice


def test_a_cpu_only_module_short_of_cpu_gets_no_gpu_advice() -> None:
    advice = unschedulable_advice(CPU_SHORT, pod_requests(pod(requests={"cpu": "12"})), NODES)
    assert "add cpu capacity or lower resources.cpu" in advice
    assert "GPU" not in advice.split(". To fit:")[1]


def test_placement_mismatch_names_placement() -> None:
    advice = unschedulable_advice(AFFINITY, pod_requests(pod(requests={"cpu": "1"})), NODES)
    assert "no node matches its placement" in advice and "replicas" not in advice


def test_without_nodes_the_scheduler_reasons_still_lead_the_advice() -> None:
    advice = unschedulable_advice(GPU_SHORT, {}, None)
    assert advice.endswith(
        "To fit: free or add nvidia.com/gpu capacity (GPU nodes in the allowed region); nodes "
        "carry taints it does not tolerate: add tolerations or untaint, or lower its replicas"
    )


# --- in the status ------------------------------------------------------------------------


def test_the_scheduled_condition_carries_the_advice_once() -> None:
    graph = ModuleGraph.model_validate(
        {
            "apiVersion": "modulemesh.io/v1alpha1",
            "kind": "ModuleGraph",
            "metadata": {"name": "g", "namespace": "ns"},
            "spec": {
                "modules": [{"name": "big", "model": {"path": "b.onnx"}, "resources": {"gpu": 8}}],
                "routing": {"entry": "main", "nodes": [
                    {"name": "main", "type": "sequence", "steps": [{"module": "big"}]}]},
            },
        }
    )  # fmt: skip
    stuck = pod(limits={"nvidia.com/gpu": "8"})
    stuck["metadata"] = {
        "labels": {"app.kubernetes.io/component": "module", "modulemesh.io/module": "big"}
    }
    stuck["status"] = {
        "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": GPU_SHORT}
        ]
    }  # fmt: skip
    fields, updates = compute_status(
        Observation(graph=graph, pods=[stuck], nodes=NODES, now=datetime.now(UTC))
    )
    scheduled = next(u for u in updates if u.type == "Scheduled")
    assert scheduled.reason == "Unschedulable"
    assert scheduled.message.startswith("module big: 0/6 nodes are available")
    assert "lower resources.gpu to at most 4" in scheduled.message
    assert ".." not in scheduled.message and scheduled.message.endswith(".")
    assert "Add capacity (e.g. GPU nodes" not in scheduled.message
    assert fields["modules"][0]["unschedulable"] == GPU_SHORT
