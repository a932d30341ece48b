"""What a differentially private graph's routers need in a cluster (issue 15, point 3), on the
real control plane: the operator gives the router Deployment ``--dp-ledger`` naming the graph's
ConfigMap ledger and a service account of its own, and creates the ServiceAccount, a Role and a
RoleBinding with which that account (``kubectl auth can-i``) may get, update and create exactly
what the ConfigMap ledger does, and nothing else; a gate that stops noising prunes all three.
The chart's namespaced operator rules suffice to create that Role and RoleBinding (the API
server refuses a grant the creator does not hold: it does refuse one for Secrets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from chart.helm import Helm

from e2e.cluster import Cluster, ClusterError, wait_until
from e2e.operator_process import OperatorProcess
from modulemesh.operator.dp_ledger import ledger_objects

ACCESS = ("serviceaccounts", "roles", "rolebindings")


def _gate(noised: bool) -> dict[str, Any]:
    dp = {
        "principal": {"header": "x-tenant"},
        "budget": {"epsilon": 2, "delta": 0, "windowSeconds": 3600},
        "outputs": [{"module": "stats", "mechanism": "laplace", "sensitivity": 1, "epsilon": 0.5}],
    }
    # Without noise, a tag in dry run: the graph stays valid (an enforced tag no module is
    # cleared for would stop every apply, pruning included).
    plain = {"mode": "dryrun", "tags": [{"name": "pii"}]}
    spec: dict[str, Any] = {"differentialPrivacy": dp} if noised else plain
    return {"apiVersion": "modulemesh.io/v1alpha1", "kind": "PrivacyGate",
            "metadata": {"name": "dp"}, "spec": spec}  # fmt: skip


GRAPH = {
    "apiVersion": "modulemesh.io/v1alpha1", "kind": "ModuleGraph", "metadata": {"name": "dpg"},
    "spec": {"gates": ["dp"],
             "modules": [{"name": "stats", "model": {"path": "/models/stats.onnx"}}],
             "routing": {"entry": "main", "nodes": [
                 {"name": "main", "type": "sequence", "steps": [{"module": "stats"}]}]}},
}  # fmt: skip


def _owned(cluster: Cluster, ns: str, kind: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "-n", ns, "get", kind, "-l", "modulemesh.io/graph=dpg"
    )["items"]
    return items


def _wait(operator: OperatorProcess, probe: Callable[[], bool], what: str) -> None:
    try:
        wait_until(probe, timeout=90, message=what)
    except TimeoutError as error:
        raise AssertionError(f"{error}\noperator log:\n{operator.log()}") from error


def _can(cluster: Cluster, ns: str, verb: str, what: str) -> bool:
    proc = cluster.kubectl(
        "auth", "can-i", verb, what, "-n", ns,
        f"--as=system:serviceaccount:{ns}:dpg-router", check=False,
    )  # fmt: skip
    return proc.stdout.strip() == "yes"


def test_a_dp_router_gets_exactly_its_ledger_and_loses_it_with_the_noise(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    cluster.apply(_gate(noised=True), namespace)
    cluster.apply(GRAPH, namespace)

    def rendered() -> bool:
        return all(_owned(cluster, namespace, kind) for kind in ACCESS)

    _wait(operator, rendered, "the router's ledger access")
    (role,) = _owned(cluster, namespace, "roles")
    assert role["metadata"]["name"] == "dpg-router"
    assert role["metadata"]["ownerReferences"][0]["name"] == "dpg"
    router = cluster.kubectl_json("-n", namespace, "get", "deployment", "dpg-router")
    pod = router["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "dpg-router"
    args = pod["containers"][0]["args"]
    assert f"--dp-ledger=configmap:{namespace}/dpg-dp-ledger" in args

    # What the router's own account may do: the ledger's get, update and create, nothing more.
    assert _can(cluster, namespace, "get", "configmaps/dpg-dp-ledger")
    assert _can(cluster, namespace, "update", "configmaps/dpg-dp-ledger")
    assert _can(cluster, namespace, "create", "configmaps")
    assert not _can(cluster, namespace, "get", "configmaps/dpg-graph")
    assert not _can(cluster, namespace, "update", "configmaps/someone-elses")
    assert not _can(cluster, namespace, "delete", "configmaps/dpg-dp-ledger")
    assert not _can(cluster, namespace, "list", "configmaps")
    assert not _can(cluster, namespace, "get", "secrets")

    # The gate stops noising: the router goes back to no token, and its access is pruned.
    cluster.apply(_gate(noised=False), namespace)

    def pruned() -> bool:
        return not any(_owned(cluster, namespace, kind) for kind in ACCESS)

    _wait(operator, pruned, "the ledger access pruned")
    router = cluster.kubectl_json("-n", namespace, "get", "deployment", "dpg-router")
    pod = router["spec"]["template"]["spec"]
    assert pod.get("automountServiceAccountToken") is False
    assert not any(a.startswith("--dp-ledger") for a in pod["containers"][0]["args"])


def test_the_charts_operator_rules_may_grant_the_ledger_access(
    cluster: Cluster, namespace: str
) -> None:
    """RBAC escalation prevention: the operator can create this Role only because the chart
    gives it get, update and create on ConfigMaps itself."""
    objects = Helm(cluster.helm_path).render(set_values={"watchNamespaces": f"{{{namespace}}}"})
    (rules,) = [o["rules"] for o in objects if o["kind"] == "Role"]
    operator_access = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "op"}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "op"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "op"},
         "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": namespace}]},
    ]  # fmt: skip
    cluster.apply(operator_access, namespace)
    as_operator = f"--as=system:serviceaccount:{namespace}:op"

    def create(objects: list[dict[str, Any]]) -> None:
        text = yaml.safe_dump_all(objects)
        cluster.kubectl("-n", namespace, "create", as_operator, "-f", "-", input=text)

    create(ledger_objects("dpg", namespace))
    names = {o["metadata"]["name"] for o in _owned(cluster, namespace, "rolebindings")}
    assert names == {"dpg-router"}
    secrets = ledger_objects("other", namespace)[1]
    secrets["rules"] = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    with pytest.raises(ClusterError, match="forbidden"):
        create([secrets])
