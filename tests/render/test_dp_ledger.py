"""A graph whose gates noise its modules' outputs (issue 15, point 3, in a cluster): its router
charges a ConfigMap ledger of its own, named by --dp-ledger, as a service account of its own
with a Role that reaches exactly that ConfigMap (get, update; create, which RBAC cannot limit by
name) and a RoleBinding; rendered before the Deployments. A graph without such an output (or
whose gate noises another graph's module) keeps a router without a token or ledger."""

from __future__ import annotations

from typing import Any

from render.render_builders import by_kind, graph

from modulemesh.api import PrivacyGate
from modulemesh.operator.dp_ledger import ledger_name
from modulemesh.operator.render import render
from modulemesh.operator.settings import RenderSettings


def dp_gate(module: str = "m", name: str = "dp") -> PrivacyGate:
    """A gate noising ``module``'s outputs under a per-tenant budget."""
    return PrivacyGate.model_validate(
        {
            "apiVersion": "modulemesh.io/v1alpha1",
            "kind": "PrivacyGate",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {
                "differentialPrivacy": {
                    "principal": {"header": "x-tenant"},
                    "budget": {"epsilon": 2, "delta": 0, "windowSeconds": 3600},
                    "outputs": [
                        {"module": module, "mechanism": "laplace", "sensitivity": 1, "epsilon": 0.5}
                    ],
                }
            },
        }
    )


def _router(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = by_kind(objects, "Deployment")["g-router"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


class TestAGraphWithDifferentialPrivacy:
    def test_its_router_charges_the_graph_ledger_as_its_own_account(self) -> None:
        objects = render(graph(gates=["dp"]), [dp_gate()], RenderSettings())
        pod, container = _router(objects)
        assert pod["serviceAccountName"] == "g-router"
        assert "automountServiceAccountToken" not in pod  # the ledger needs the token
        assert "--dp-ledger=configmap:ns/g-dp-ledger" in container["args"]
        assert ledger_name("g") == "g-dp-ledger"

    def test_the_role_reaches_only_the_ledger_and_is_bound_to_the_router(self) -> None:
        objects = render(graph(gates=["dp"]), [dp_gate()], RenderSettings())
        (account,) = by_kind(objects, "ServiceAccount").values()
        assert account["metadata"]["name"] == "g-router"
        assert account["metadata"]["namespace"] == "ns"
        (role,) = by_kind(objects, "Role").values()
        assert role["rules"] == [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["g-dp-ledger"],
                "verbs": ["get", "update"],
            },
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        ]
        (binding,) = by_kind(objects, "RoleBinding").values()
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "g-router", "namespace": "ns"}
        ]
        for obj in (account, role, binding):  # found and pruned with the graph's children
            assert obj["metadata"]["labels"]["modulemesh.io/graph"] == "g"

    def test_the_access_is_rendered_before_the_deployments(self) -> None:
        kinds = [o["kind"] for o in render(graph(gates=["dp"]), [dp_gate()], RenderSettings())]
        first_deployment = kinds.index("Deployment")
        for kind in ("ServiceAccount", "Role", "RoleBinding"):
            assert kinds.index(kind) < first_deployment

    def test_the_ledger_configmap_itself_is_not_rendered(self) -> None:
        """The router creates it at its first charge; owned, it would go with the graph and
        a re-created graph would hand every principal a fresh budget."""
        objects = render(graph(gates=["dp"]), [dp_gate()], RenderSettings())
        assert "g-dp-ledger" not in by_kind(objects, "ConfigMap")


class TestNoLedgerWithoutANoisedOutput:
    def test_no_gate(self) -> None:
        objects = render(graph(), [], RenderSettings())
        pod, container = _router(objects)
        assert pod["automountServiceAccountToken"] is False
        assert "serviceAccountName" not in pod
        assert not any(a.startswith("--dp-ledger") for a in container["args"])
        for kind in ("ServiceAccount", "Role", "RoleBinding"):
            assert not by_kind(objects, kind)

    def test_a_gate_noising_a_module_of_another_graph(self) -> None:
        objects = render(graph(gates=["dp"]), [dp_gate(module="other")], RenderSettings())
        pod, _ = _router(objects)
        assert pod["automountServiceAccountToken"] is False
        assert not by_kind(objects, "Role")

    def test_a_gate_the_graph_does_not_name(self) -> None:
        objects = render(graph(), [dp_gate()], RenderSettings())
        assert not by_kind(objects, "ServiceAccount")
