"""The validating admission webhook on the real control plane.

One operator process serves the webhook on 127.0.0.1 with a certificate it generated, and
applies the ``modulemesh.io`` ValidatingWebhookConfiguration pointing at it (URL + CA bundle,
failurePolicy Ignore), and no MutatingWebhookConfiguration. Then `kubectl apply` of a graph with a dangling reference is refused
before anything is stored, with the field and a suggestion in kubectl's error, on server-side
dry-run as well, and so is a cycle between nodes; a graph naming a gate that is not applied yet is admitted; a warning reaches
kubectl without refusing; a PrivacyGate with an empty region list is refused; status updates
(the operator's own) are not sent through the webhook; and stopping the operator takes its
webhook out of the configuration, so nothing is refused or delayed without it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from api import graph_builders as builders

from e2e.cluster import Cluster, wait_until
from e2e.operator_process import (
    WEBHOOK_CONFIGURATION,
    OperatorProcess,
    delete_webhook_configuration,
    install_crds,
    local_webhook_env,
    webhooks_in,
)
from e2e.test_operator import condition, graph_doc, wait_condition


@pytest.fixture(scope="module")
def webhook_operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """An operator serving the webhook; the configuration is removed after the module."""
    install_crds(cluster)
    log = tmp_path_factory.mktemp("webhook") / "operator.log"
    proc = OperatorProcess(cluster, log, env=local_webhook_env()).start()
    try:
        wait_until(
            lambda: webhooks_in(cluster) or None,
            timeout=60,
            message=f"the operator's webhook configuration (log: {log})",
        )
        yield proc
    finally:
        proc.stop()
        delete_webhook_configuration(cluster)


def apply_doc(cluster: Cluster, namespace: str, doc: dict[str, Any], *extra: str) -> Any:
    return cluster.kubectl(
        "apply", "-n", namespace, *extra, "-f", "-", input=yaml.safe_dump(doc), check=False
    )


def _dangling() -> dict[str, Any]:
    doc = graph_doc("typo")
    doc["spec"]["routing"]["nodes"][0]["steps"][1]["module"] = "clasifier"
    return doc


def test_the_configuration_points_at_the_operator(
    cluster: Cluster, webhook_operator: OperatorProcess
) -> None:
    hooks = {h["name"]: h for h in webhooks_in(cluster)}
    assert set(hooks) == {"modulegraphs.modulemesh.io", "privacygates.modulemesh.io"}
    for hook in hooks.values():
        assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None"
        assert hook["clientConfig"]["url"].startswith("https://127.0.0.1:")
        assert hook["timeoutSeconds"] == 10
        assert b"BEGIN CERTIFICATE" in base64.b64decode(hook["clientConfig"]["caBundle"])
        (rule,) = hook["rules"]
        assert rule["scope"] == "Namespaced"
        assert rule["operations"] == ["CREATE", "UPDATE"]
        assert rule["resources"] in (["modulegraphs"], ["privacygates"])  # not status


def test_no_mutating_configuration_is_created(
    cluster: Cluster, webhook_operator: OperatorProcess
) -> None:
    found = cluster.kubectl(
        "get", "mutatingwebhookconfiguration", WEBHOOK_CONFIGURATION, check=False
    )
    assert found.returncode != 0 and "NotFound" in found.stderr


def test_an_invalid_graph_is_refused_at_apply_naming_the_field(
    cluster: Cluster, webhook_operator: OperatorProcess, namespace: str
) -> None:
    for extra in (("--dry-run=server",), ()):
        refused = apply_doc(cluster, namespace, _dangling(), *extra)
        assert refused.returncode != 0, refused.stdout
        assert 'admission webhook "modulegraphs.modulemesh.io" denied' in refused.stderr
        assert "spec.routing.nodes[0].steps[1].module" in refused.stderr
        assert "did you mean 'classifier'" in refused.stderr, refused.stderr
    missing = cluster.kubectl("get", "-n", namespace, "modulegraph", "typo", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr  # nothing was stored


def test_a_cycle_is_refused_at_apply(
    cluster: Cluster, webhook_operator: OperatorProcess, namespace: str
) -> None:
    # What KServe's InferenceGraph webhook lets through: nodes that call each other.
    doc = graph_doc("loop")
    doc["spec"]["routing"]["nodes"] = [
        {"name": "main", "type": "sequence", "steps": [{"node": "again"}]},
        {"name": "again", "type": "sequence", "steps": [{"node": "main"}]},
    ]
    refused = apply_doc(cluster, namespace, doc)
    assert refused.returncode != 0
    assert 'admission webhook "modulegraphs.modulemesh.io" denied' in refused.stderr
    assert "spec.routing.nodes" in refused.stderr and "cycle" in refused.stderr.lower()


def test_a_graph_whose_gate_is_not_applied_yet_is_admitted_and_waits_for_it(
    cluster: Cluster, webhook_operator: OperatorProcess, namespace: str
) -> None:
    doc = graph_doc("early", gates=["pii-gate"])
    admitted = apply_doc(cluster, namespace, doc)
    assert admitted.returncode == 0, admitted.stderr
    graph = wait_condition(cluster, webhook_operator, namespace, "early", "Validated", "False")
    assert "pii-gate" in condition(graph, "Validated")["message"]


def test_warnings_reach_kubectl_without_refusing(
    cluster: Cluster, webhook_operator: OperatorProcess, namespace: str
) -> None:
    gate = builders.gate("open", {"name": "internal"})
    assert apply_doc(cluster, namespace, gate).returncode == 0
    doc = graph_doc("twice", gates=["open", "open"])
    for module in doc["spec"]["modules"]:
        module["clearance"] = ["internal"]
    admitted = apply_doc(cluster, namespace, doc)
    assert admitted.returncode == 0, admitted.stderr
    assert "Warning: spec.gates[1]: gate 'open' is listed twice" in admitted.stderr, admitted.stderr


def test_a_gate_with_an_empty_region_list_is_refused(
    cluster: Cluster, webhook_operator: OperatorProcess, namespace: str
) -> None:
    gate = builders.gate("nowhere", {"name": "pii", "allowedRegions": []})
    refused = apply_doc(cluster, namespace, gate)
    assert refused.returncode != 0
    assert 'admission webhook "privacygates.modulemesh.io" denied' in refused.stderr
    assert "spec.tags[0].allowedRegions" in refused.stderr


def test_without_the_operator_its_webhook_is_withdrawn(
    cluster: Cluster, webhook_operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    webhook_operator.stop()
    try:
        wait_until(
            lambda: not webhooks_in(cluster), timeout=30, message="the webhooks to be withdrawn"
        )
        # Admitted now (the operator, once back, reports it as Validated=False).
        assert apply_doc(cluster, namespace, _dangling()).returncode == 0
    finally:
        webhook_operator.start()
        wait_until(lambda: webhooks_in(cluster) or None, timeout=60, message="webhooks back")
