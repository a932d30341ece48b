"""A module's canary on the real control plane (issue 16): the operator creates the canary's
Deployment and Service beside the module's and tells the router the canary's endpoint; the
module's own readiness counts only its own pods; dropping the canary from the spec (after a
promotion or a rollback) removes both objects and the endpoint."""

from __future__ import annotations

import json
from typing import Any

from e2e.cluster import Cluster, wait_until
from e2e.operator_process import OperatorProcess


def _graph(canary: bool) -> dict[str, Any]:
    module: dict[str, Any] = {"name": "clf", "model": {"path": "/models/v1.onnx"}, "version": "1"}
    if canary:
        module["canary"] = {"model": {"path": "/models/v2.onnx"}, "version": "2"}
        module["rollout"] = {"steps": [{"percent": 10, "holdSeconds": 60}]}
    return {
        "apiVersion": "modulemesh.io/v1alpha1", "kind": "ModuleGraph",
        "metadata": {"name": "ro"},
        "spec": {"modules": [module],
                 "routing": {"entry": "main", "nodes": [
                     {"name": "main", "type": "sequence", "steps": [{"module": "clf"}]}]}},
    }  # fmt: skip


def _names(cluster: Cluster, ns: str, kind: str) -> set[str]:
    items = cluster.kubectl_json("-n", ns, "get", kind, "-l", "modulemesh.io/graph=ro")["items"]
    return {i["metadata"]["name"] for i in items}


def _resolved(cluster: Cluster, ns: str) -> dict[str, Any]:
    config = cluster.kubectl_json("-n", ns, "get", "configmap", "ro-graph")
    resolved: dict[str, Any] = json.loads(config["data"]["resolved.json"])
    return resolved


def test_the_canary_objects_follow_the_spec(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    cluster.apply(_graph(canary=True), namespace)

    def created() -> bool:
        return "ro-clf-canary" in _names(cluster, namespace, "deployments")

    wait_until(created, timeout=90, message="the canary Deployment")
    assert _names(cluster, namespace, "services") >= {"ro-clf", "ro-clf-canary", "ro-router"}
    canary = cluster.kubectl_json("-n", namespace, "get", "deployment", "ro-clf-canary")
    template = canary["spec"]["template"]
    assert template["metadata"]["labels"]["modulemesh.io/module"] == "clf.canary"
    runtime = next(c for c in template["spec"]["containers"] if c["name"] == "runtime")
    assert "--model=/models/v2.onnx" in runtime["args"]
    assert "--model-version=2" in runtime["args"]
    endpoint = f"http://ro-clf-canary.{namespace}.svc.cluster.local:8080"
    assert _resolved(cluster, namespace)["canaryEndpoints"] == {"clf": endpoint}

    def ready() -> dict[str, Any] | None:
        graph = cluster.kubectl_json("-n", namespace, "get", "modulegraph", "ro")
        status = graph.get("status") or {}
        return graph if status.get("modulesReady") == "1/1" else None

    wait_until(ready, timeout=120, message="the graph's module ready (its own pods only)")

    cluster.apply(_graph(canary=False), namespace)

    def pruned() -> bool:
        return "ro-clf-canary" not in _names(cluster, namespace, "deployments") | _names(
            cluster, namespace, "services"
        )

    try:
        wait_until(pruned, timeout=90, message="the canary's objects removed")
    except TimeoutError as error:
        raise AssertionError(f"{error}\noperator log:\n{operator.log()}") from error
    assert "canaryEndpoints" not in _resolved(cluster, namespace)
    assert "ro-clf" in _names(cluster, namespace, "deployments")
