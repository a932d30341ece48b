"""The validating admission webhook on the real control plane.

The ``modulemesh.io`` ValidatingWebhookConfiguration is installed as documented for an operator
outside the cluster (``modulemesh webhook-configuration | kubectl apply -f -``: URL, failurePolicy
Ignore, no CA bundle); one operator process serves the webhook on 127.0.0.1 with a certificate
it generated and patches in its CA bundle, and nothing else: the configuration's managed fields
show it owns only the two caBundle fields, and it creates no MutatingWebhookConfiguration. Then
`kubectl apply` of a graph with a dangling reference is refused before anything is stored, with
the field and a suggestion in kubectl's error, on server-side dry-run as well, and so is a cycle
between nodes; a graph naming a gate that is not applied yet is admitted; a warning reaches
kubectl without refusing; a PrivacyGate with an empty region list is refused; status updates
(the operator's own) are not sent through the webhook. With the operator stopped, the
configuration stays and applies are admitted at once (the call fails fast under Ignore); an
operator started without the configuration says so in its log, and sets its CA bundle as soon
as the configuration is installed.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from api import graph_builders as builders

from e2e.cluster import Cluster, wait_until
from e2e.operator_process import (
    WEBHOOK_CONFIGURATION,
    OperatorProcess,
    apply_doc,
    ca_bundles_set,
    delete_webhook_configuration,
    install_webhook_configuration,
    serving_webhook,
    webhooks_in,
)
from e2e.test_operator import condition, graph_doc, wait_condition


@pytest.fixture(scope="module")
def webhook_operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """An operator serving the webhook; the configuration is removed after the module."""
    with serving_webhook(cluster, tmp_path_factory.mktemp("webhook") / "operator.log") as proc:
        yield proc


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


def test_the_operator_owns_only_the_ca_bundles(
    cluster: Cluster, webhook_operator: OperatorProcess
) -> None:
    config = cluster.kubectl_json(
        "get", "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "--show-managed-fields"
    )
    (entry,) = [
        m for m in config["metadata"]["managedFields"] if m["manager"] == "modulemesh-operator"
    ]
    fields = entry["fieldsV1"]
    assert list(fields) == ["f:webhooks"], fields
    for key, hook in fields["f:webhooks"].items():
        assert json.loads(key[2:])["name"] in (
            "modulegraphs.modulemesh.io",
            "privacygates.modulemesh.io",
        )
        assert {k: v for k, v in hook.items() if k != "."} == {
            "f:clientConfig": {"f:caBundle": {}}
        }, hook


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


def test_without_the_operator_applies_are_admitted_at_once_and_it_comes_back(
    cluster: Cluster, webhook_operator: OperatorProcess, namespace: str
) -> None:
    webhook_operator.stop()
    try:
        # The configuration stays (the operator may not empty it) ...
        assert ca_bundles_set(cluster)
        # ... and costs nothing: the API server's call is refused at once, and under Ignore
        # the graph is admitted (the operator, once back, reports it as Validated=False).
        started = time.monotonic()
        admitted = apply_doc(cluster, namespace, _dangling())
        assert admitted.returncode == 0, admitted.stderr
        assert time.monotonic() - started < 5, "the apply waited on the absent webhook"

        # An operator started without the configuration names what is missing ...
        delete_webhook_configuration(cluster)
        webhook_operator.start()
        wait_until(
            lambda: (
                "ValidatingWebhookConfiguration modulemesh.io does not exist"
                in webhook_operator.log()
            ),
            timeout=30,
            message="the operator to report the missing configuration",
        )
        # ... and sets its CA bundle as soon as it is installed (no restart).
        install_webhook_configuration(cluster, webhook_operator.extra_env)
        wait_until(lambda: ca_bundles_set(cluster), timeout=30, message="the CA bundle set")
        wait_until(
            lambda: apply_doc(cluster, namespace, _dangling(), "--dry-run=server").returncode != 0,
            timeout=30,
            message="a dangling reference refused again",
        )
    finally:
        if webhook_operator.proc is None:
            webhook_operator.start()
        if not webhooks_in(cluster):
            install_webhook_configuration(cluster, webhook_operator.extra_env)
