"""The operator's watch cache: what it keeps of an object (only what a reconcile reads, so
memory per graph stays bounded), newer versions win over older ones whatever order they arrive
in, deletions are forgotten, and children and pods are found by their graph's label."""

from __future__ import annotations

from typing import Any

from modulemesh.operator import drift
from modulemesh.operator.cache import Cache, slim
from modulemesh.operator.kube import FIELD_MANAGER
from modulemesh.operator.naming import graph_selector

LABELS = graph_selector("g")


def deployment(name: str, rv: str, ready: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": rv,
            "labels": dict(LABELS),
            "annotations": {drift.INTENT_ANNOTATION: "abc", drift.FIELDS_ANNOTATION: "def"},
            "managedFields": [
                {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {}}},
                {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {}},
            ],
        },
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"image": "x" * 5000}]}}},
        "status": {"readyReplicas": ready, "replicas": 1, "conditions": [{"type": "Available"}]},
    }


# --- what is kept ----------------------------------------------------------------------------


def test_a_child_keeps_only_what_drift_and_status_read() -> None:
    kept = slim("Deployment", deployment("g-a", "5", ready=1))
    # the operator's field set as its hash, the other writers by name
    assert kept["metadata"][drift.DIGEST_KEY] == drift.fields_hash(deployment("g-a", "5"))
    assert kept["metadata"]["managedFields"] == [{"manager": "kube-controller-manager"}]
    assert kept["status"] == {"readyReplicas": 1, "replicas": 1}
    assert kept["spec"] == {"replicas": 1}  # no pod template
    # drift reads the same from it: holding what was applied, or not
    full = deployment("g-a", "5")
    full["metadata"]["annotations"][drift.FIELDS_ANNOTATION] = drift.fields_hash(full)
    assert drift.drift(slim("Deployment", full)) is None and drift.drift(full) is None
    assert drift.drift(kept) == drift.drift(deployment("g-a", "5")) is not None
    taken = deployment("g-a", "6")
    taken["metadata"]["managedFields"] = taken["metadata"]["managedFields"][1:]
    assert drift.drift(slim("Deployment", taken)) == "the operator's fields were taken over"


def test_a_pod_keeps_its_labels_conditions_and_requests() -> None:
    pod = {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "labels": dict(LABELS), "uid": "u"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "i",
                    "env": [{"name": "A"}] * 50,
                    "resources": {"requests": {"cpu": "1"}},
                }
            ]
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None}],
            "containerStatuses": [{"name": "c"}],
        },
    }
    kept = slim("Pod", pod)
    assert kept["spec"] == {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}
    assert kept["status"] == {"conditions": [{"type": "Ready", "status": "True"}]}


# --- order and deletion ------------------------------------------------------------------------


def test_an_older_version_never_replaces_a_newer_one() -> None:
    cache = Cache()
    cache.put("Deployment", deployment("g-a", "10", ready=1))
    cache.put("Deployment", deployment("g-a", "9", ready=0))  # a listing that raced the write
    assert cache.owned("ns", "g", "Deployment")[0]["status"]["readyReplicas"] == 1
    cache.put("Deployment", deployment("g-a", "11", ready=0))
    assert cache.owned("ns", "g", "Deployment")[0]["status"]["readyReplicas"] == 0


def test_children_are_found_by_graph_and_kind_and_deletions_forgotten() -> None:
    cache = Cache()
    cache.prime("Deployment", [deployment("g-a", "1"), deployment("g-b", "2")])
    other = deployment("h-a", "3")
    other["metadata"]["labels"] = graph_selector("h")
    cache.put("Deployment", other)
    unmanaged = deployment("x", "4")
    unmanaged["metadata"]["labels"] = {}
    cache.put("Deployment", unmanaged)
    assert [d["metadata"]["name"] for d in cache.owned("ns", "g", "Deployment")] == ["g-a", "g-b"]
    assert cache.owned("ns", "g", "Service") == []
    assert cache.ready("Deployment") and not cache.ready("Deployment", "Pod")
    cache.remove("Deployment", deployment("g-a", "5"))
    assert [d["metadata"]["name"] for d in cache.owned("ns", "g", "Deployment")] == ["g-b"]
    assert cache.sizes()["owned"] == 2


def test_a_status_the_operator_wrote_is_what_the_next_reconcile_compares_with() -> None:
    cache = Cache()
    graph = {
        "kind": "ModuleGraph",
        "metadata": {"name": "g", "namespace": "ns", "resourceVersion": "7", "generation": 2},
        "spec": {"modules": []},
    }
    cache.put("ModuleGraph", graph)
    cache.set_status("ns", "g", {"observedGeneration": 2}, "8")
    assert cache.graph("ns", "g") == {
        **graph,
        "apiVersion": None,
        "metadata": {**graph["metadata"], "resourceVersion": "8"},
        "status": {"observedGeneration": 2},
    }
    cache.put("ModuleGraph", graph)  # the watch's copy from before the patch comes late
    assert cache.graph("ns", "g")["status"] == {"observedGeneration": 2}  # type: ignore[index]
