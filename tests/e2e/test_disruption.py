"""PodDisruptionBudgets of replicated Deployments on the real control plane.

A graph whose embedder runs 3 replicas and whose router runs 2 gets one budget each (none for
the single classifier), owned by the graph; the cluster's disruption controller counts exactly
that Deployment's pods under it and allows one eviction at a time, and a drain's eviction
goes through it. A budget deleted
by hand comes back; scaling the embedder to one replica removes its budget; deleting the graph
removes the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from e2e.cluster import Cluster, wait_until
from e2e.operator_process import OperatorProcess, install_crds
from e2e.test_operator import graph_doc, owned, wait_condition


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    install_crds(cluster)
    log = tmp_path_factory.mktemp("disruption") / "operator.log"
    proc = OperatorProcess(cluster, log).start()
    yield proc
    proc.stop()


def replicated(name: str, embedders: int) -> dict[str, Any]:
    doc = graph_doc(name, router={"replicas": 2})
    doc["spec"]["modules"][0]["replicas"] = embedders
    return doc


def budgets(cluster: Cluster, namespace: str, graph: str) -> dict[str, dict[str, Any]]:
    return {
        b["metadata"]["name"]: b for b in owned(cluster, namespace, "poddisruptionbudgets", graph)
    }


def counted(
    cluster: Cluster, namespace: str, graph: str, name: str, pods: int
) -> dict[str, Any] | None:
    """The budget's status once the controller counts ``pods`` healthy pods under it."""
    status: dict[str, Any] = budgets(cluster, namespace, graph)[name].get("status") or {}
    healthy = status.get("expectedPods") == pods and status.get("currentHealthy") == pods
    return status if healthy else None


def evict(cluster: Cluster, namespace: str, pod: str) -> Any:
    """POST an Eviction for ``pod`` (what a node drain does) and return kubectl's result."""
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": namespace},
    }
    return cluster.kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction",
        "-f",
        "-",
        input=json.dumps(eviction),
        check=False,
    )


def test_replicated_deployments_get_budgets_that_let_pods_go_one_at_a_time(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    cluster.apply(replicated("spread", 3), namespace)
    graph = wait_condition(cluster, operator, namespace, "spread", "Ready", "True", timeout=120)
    found = budgets(cluster, namespace, "spread")
    assert set(found) == {"spread-embedder", "spread-router"}, operator.log()
    for budget in found.values():
        (owner,) = budget["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "ModuleGraph",
            "spread",
            graph["metadata"]["uid"],
        )
        assert budget["spec"]["maxUnavailable"] == 1

    # The cluster's disruption controller finds exactly each Deployment's pods (the embedder's
    # three, the router's two) and allows one of them to go at a time.
    for name, replicas in (("spread-embedder", 3), ("spread-router", 2)):
        status = wait_until(
            partial(counted, cluster, namespace, "spread", name, replicas),
            timeout=60,
            message=f"{name}'s budget to count its {replicas} healthy pods",
        )
        assert (status["desiredHealthy"], status["disruptionsAllowed"]) == (replicas - 1, 1)

    # A drain's eviction goes through the budget.
    pods = [p["metadata"]["name"] for p in owned(cluster, namespace, "pods", "spread")]
    embedders = sorted(p for p in pods if p.startswith("spread-embedder-"))
    assert len(embedders) == 3, pods
    evicted = evict(cluster, namespace, embedders[0])
    assert evicted.returncode == 0, evicted.stderr


def test_budgets_are_restored_and_follow_the_replica_count(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    cluster.apply(replicated("scaled", 2), namespace)
    wait_until(
        lambda: set(budgets(cluster, namespace, "scaled")) == {"scaled-embedder", "scaled-router"},
        timeout=90,
        message="both budgets",
    )
    old_uid = budgets(cluster, namespace, "scaled")["scaled-embedder"]["metadata"]["uid"]
    cluster.kubectl("-n", namespace, "delete", "poddisruptionbudget", "scaled-embedder")
    wait_until(
        lambda: budgets(cluster, namespace, "scaled").get("scaled-embedder", {}).get("metadata", {})
        .get("uid") not in (None, old_uid),
        timeout=60, message="the deleted budget to come back",
    )  # fmt: skip

    cluster.apply(replicated("scaled", 1), namespace)
    wait_until(
        lambda: set(budgets(cluster, namespace, "scaled")) == {"scaled-router"},
        timeout=90,
        message="the embedder budget to go with its second replica",
    )

    cluster.kubectl("-n", namespace, "delete", "modulegraph", "scaled", "--wait=true")
    wait_until(
        lambda: not budgets(cluster, namespace, "scaled"),
        timeout=90,
        message="the router budget to be collected with the graph",
    )
