"""PrivacyGate changes checked against the graphs that name them, on the real control plane.

An operator serves the webhook on 127.0.0.1 (configuration installed as documented for a local
operator). A graph naming a gate is applied while it complies; then `kubectl apply` of the gate
narrowed to a region the graph's classifier does not run in is admitted with kubectl printing
a warning naming the graph, field and problem; with MODULEMESH_WEBHOOK_STRICT_GATES=true the
same change is refused naming the graph, and the stored gate stays as it was. Through the same
API server, graphs with a CEL typo or type error, or nested past the YAML bound, are refused
naming the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api import graph_builders as builders

from e2e.cluster import Cluster, wait_until
from e2e.operator_process import (
    OperatorProcess,
    apply_doc,
    serving_webhook,
)
from e2e.test_operator import graph_doc

STRICT = "MODULEMESH_WEBHOOK_STRICT_GATES"


@pytest.fixture(scope="module")
def gate_operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """An operator serving the webhook; the configuration is removed after the module."""
    with serving_webhook(
        cluster, tmp_path_factory.mktemp("webhook-gates") / "operator.log"
    ) as proc:
        yield proc


OPEN = builders.gate("pii-gate", {"name": "pii"})
EU_ONLY = builders.gate("pii-gate", {"name": "pii", "allowedRegions": ["eu-west"]})


def apply_compliant_graph(cluster: Cluster, namespace: str) -> None:
    """The open gate, then a graph naming it whose classifier runs in us-east."""
    assert apply_doc(cluster, namespace, OPEN).returncode == 0
    doc = graph_doc("fraud", gates=["pii-gate"])
    for module in doc["spec"]["modules"]:
        module["clearance"] = ["pii"]
    doc["spec"]["modules"][1]["region"] = "us-east"
    admitted = apply_doc(cluster, namespace, doc)
    assert admitted.returncode == 0, admitted.stderr


def stored_regions(cluster: Cluster, namespace: str) -> Any:
    gate = cluster.kubectl_json("get", "-n", namespace, "privacygate", "pii-gate")
    return gate["spec"]["tags"][0].get("allowedRegions")


def test_a_gate_change_that_breaks_a_graph_is_admitted_with_a_warning_naming_it(
    cluster: Cluster, gate_operator: OperatorProcess, namespace: str
) -> None:
    apply_compliant_graph(cluster, namespace)
    warning = (
        "Warning: ModuleGraph/fraud: spec.routing.nodes[0].steps[1].module: non-compliant: "
        "module 'classifier' runs in region 'us-east', but tag 'pii' may only be processed in "
        "eu-west"
    )
    # Under failurePolicy Ignore a call the API server cannot make yet (its webhook client
    # still on the old CA bundle) admits silently: wait on server-side dry-runs, which store
    # nothing, until the webhook answers.
    wait_until(
        lambda: warning in apply_doc(cluster, namespace, EU_ONLY, "--dry-run=server").stderr,
        timeout=60,
        message=f"the gate change warned about (log: {gate_operator.log_path})",
    )
    assert stored_regions(cluster, namespace) is None
    admitted = apply_doc(cluster, namespace, EU_ONLY)
    assert admitted.returncode == 0, admitted.stderr
    assert warning in admitted.stderr, admitted.stderr
    assert stored_regions(cluster, namespace) == ["eu-west"]


def refused_at_apply(cluster: Cluster, namespace: str, doc: dict[str, Any]) -> str:
    """kubectl's error for ``doc``, once the webhook answers (dry-runs until then)."""
    wait_until(
        lambda: apply_doc(cluster, namespace, doc, "--dry-run=server").returncode != 0,
        timeout=60,
        message="the webhook refusing the graph",
    )
    refused = apply_doc(cluster, namespace, doc)
    assert refused.returncode != 0
    assert 'admission webhook "modulegraphs.modulemesh.io" denied' in refused.stderr
    return str(refused.stderr)


def switch_graph(when: str) -> dict[str, Any]:
    doc = graph_doc("routed")
    doc["spec"]["routing"]["nodes"] = [
        {
            "name": "main",
            "type": "switch",
            "cases": [{"when": when, "module": "classifier"}],
            "default": {"module": "embedder"},
        }
    ]
    return doc


def test_cel_typos_and_type_errors_are_refused_at_apply(
    cluster: Cluster, gate_operator: OperatorProcess, namespace: str
) -> None:
    error = refused_at_apply(cluster, namespace, switch_graph("request.headerz['x'] == 'a'"))
    assert "spec.routing.nodes[0].cases[0].when" in error
    assert "request has no field 'headerz'; did you mean 'headers'?" in error
    error = refused_at_apply(cluster, namespace, switch_graph("request.priority + 1 == 2"))
    assert "no `+` for a string and an int" in error


def test_an_object_nested_past_the_bound_is_refused_naming_the_field(
    cluster: Cluster, gate_operator: OperatorProcess, namespace: str
) -> None:
    doc = graph_doc("deep")
    deep: Any = "x"
    for _ in range(100):
        deep = [deep]
    doc["spec"]["modules"][0]["affinity"] = {"nodeAffinity": deep}
    error = refused_at_apply(cluster, namespace, doc)
    assert "spec.modules[0].affinity.nodeAffinity: nested more than 64 levels deep" in error


def test_with_the_strict_setting_the_change_is_refused_naming_the_graph(
    cluster: Cluster, gate_operator: OperatorProcess, namespace: str
) -> None:
    gate_operator.stop()
    gate_operator.extra_env[STRICT] = "true"
    try:
        gate_operator.start()
        apply_compliant_graph(cluster, namespace)
        # the restarted operator serves a new certificate: wait for its CA bundle to be in use
        wait_until(
            lambda: apply_doc(cluster, namespace, EU_ONLY, "--dry-run=server").returncode != 0,
            timeout=60,
            message=f"the strict operator refusing the change (log: {gate_operator.log_path})",
        )
        refused = apply_doc(cluster, namespace, EU_ONLY)
        assert refused.returncode != 0
        assert 'admission webhook "privacygates.modulemesh.io" denied' in refused.stderr
        assert "ModuleGraph/fraud: spec.routing.nodes[0].steps[1].module" in refused.stderr
        assert "us-east" in refused.stderr
        assert stored_regions(cluster, namespace) is None
    finally:
        gate_operator.stop()
        gate_operator.extra_env.pop(STRICT, None)
        gate_operator.start()
