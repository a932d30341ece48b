"""What a graph's routers need to charge differential privacy budgets in a cluster.

A router whose graph has a gate noising one of its modules' outputs refuses to start without a
ledger every replica shares (``modulemesh.privacy.ledger``). In a cluster that is a ConfigMap
ledger, **one per graph**: ``<graph>-dp-ledger`` in the graph's namespace. Render gives such a
graph's router Deployment ``--dp-ledger=configmap:<namespace>/<graph>-dp-ledger`` and a
service account of its own (token mounted), plus a Role and RoleBinding that let exactly that
account get and update exactly that ConfigMap, and create ConfigMaps (Kubernetes cannot limit
``create`` by name: the name is not known when the request is authorised).

The ServiceAccount, Role and RoleBinding are owned children, pruned with the graph or when its
gates stop using differential privacy. The ledger ConfigMap is not: the router creates it at its
first charge, and it outlives the graph, so deleting and re-creating a graph does not hand every
principal a fresh budget. Pure, like render.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modulemesh.api.gate import PrivacyGate
from modulemesh.api.graph import ModuleGraph
from modulemesh.operator import naming

__all__ = ["ledger_name", "ledger_objects", "needs_ledger", "router_ledger_arg"]

RBAC_API = "rbac.authorization.k8s.io/v1"


def needs_ledger(graph: ModuleGraph, gates: Sequence[PrivacyGate]) -> bool:
    """Whether one of ``gates`` (those the graph names) noises an output of one of the graph's
    modules: the router's own test for refusing to start without a ledger."""
    modules = {m.name for m in graph.spec.modules}
    return any(
        out.module in modules
        for gate in gates
        if gate.spec.differential_privacy is not None
        for out in gate.spec.differential_privacy.outputs
    )


def ledger_name(graph: str) -> str:
    """The graph's ledger ConfigMap."""
    return naming.short_name(graph, "dp-ledger")


def router_ledger_arg(graph: str, namespace: str) -> str:
    """The router's ``--dp-ledger`` argument naming the graph's ledger."""
    return f"--dp-ledger=configmap:{namespace}/{ledger_name(graph)}"


def ledger_objects(graph: str, namespace: str) -> list[dict[str, Any]]:
    """The router's ServiceAccount, its Role on the ledger and the RoleBinding between them,
    all named like the router Deployment."""
    name = naming.router_name(graph)
    labels = naming.labels(graph, "router")

    def meta() -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "labels": dict(labels)}

    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta()},
        {
            "apiVersion": RBAC_API,
            "kind": "Role",
            "metadata": meta(),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [ledger_name(graph)],
                    "verbs": ["get", "update"],
                },
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            ],
        },
        {
            "apiVersion": RBAC_API,
            "kind": "RoleBinding",
            "metadata": meta(),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]
