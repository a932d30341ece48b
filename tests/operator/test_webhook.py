"""The admission webhook's verdicts and set-up, without a cluster: a graph or gate is refused
for exactly the errors the reconciler would report (fields named), warnings pass through, a
graph naming a gate that does not exist yet is admitted, settings come from MODULEMESH_WEBHOOK_*
with clear errors, the generated certificate covers the names the API server dials, and the
configuration (chart's or printed by `modulemesh webhook-configuration`) leaves the CA bundle
to the operator."""

from __future__ import annotations

import base64
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import pytest
from api import graph_builders as builders
from cryptography import x509

from modulemesh.api import PrivacyGate
from modulemesh.cli import main
from modulemesh.operator.config import OperatorSettings, WebhookSettings
from modulemesh.operator.webhook import (
    WEBHOOKS,
    admit_gate,
    admit_graph,
    self_signed_certificate,
    webhook_configuration,
    webhook_server,
)


def graph(**spec: Any) -> dict[str, Any]:
    """The validation tests' baseline graph, both modules cleared for ``pii``, as the API
    server sends it: with server-set metadata and a status, which play no part."""
    body = builders.graph(**spec)
    body["metadata"] = {"name": "fraud", "namespace": "team-a", "uid": "x", "generation": 3}
    body["status"] = {"observedGeneration": 2}
    for module in body["spec"]["modules"]:
        module.setdefault("clearance", ["pii"])
    return body


def gate(**tag: Any) -> PrivacyGate:
    return PrivacyGate.model_validate(builders.gate("pii-gate", {"name": "pii", **tag}))


def test_a_valid_graph_is_admitted_whatever_its_status_and_server_fields() -> None:
    verdict = admit_graph(graph(), [])
    assert verdict.errors == [] and verdict.warnings == []


def test_a_dangling_reference_is_refused_naming_the_field() -> None:
    body = graph()
    body["spec"]["routing"]["nodes"][0]["steps"][1]["module"] = "clasifier"
    verdict = admit_graph(body, [])
    assert [i.path for i in verdict.errors] == ["spec.routing.nodes[0].steps[1].module"]
    message = verdict.message("ModuleGraph", "fraud")
    assert message.startswith("ModuleGraph 'fraud' is invalid: spec.routing.nodes[0].steps[1]")
    assert "classifier" in message  # the suggestion


def test_schema_errors_are_refused_with_camel_case_paths() -> None:
    body = graph()
    body["spec"]["modules"][0]["batching"] = {"maxBatchSize": "many"}
    verdict = admit_graph(body, [])
    assert verdict.errors and verdict.errors[0].path == "spec.modules[0].batching.maxBatchSize"


def test_a_gate_not_applied_yet_is_admitted_but_present_gates_are_checked() -> None:
    assert admit_graph(graph(gates=["pii-gate"]), []).errors == []
    # With the gate present, a tag that may only go to eu-west meets a module pinned elsewhere.
    body = graph(gates=["pii-gate"])
    body["spec"]["modules"][1]["region"] = "us-east"
    verdict = admit_graph(body, [gate(allowedRegions=["eu-west"])])
    paths = [i.path for i in verdict.errors]
    assert paths == ["spec.routing.nodes[0].steps[1].module", "spec.modules[1]"], verdict
    assert "us-east" in verdict.message("ModuleGraph", "fraud")
    # And a module not cleared for the gate's tag is refused as non-compliant.
    body = graph(gates=["pii-gate"])
    body["spec"]["modules"][0]["clearance"] = []
    verdict = admit_graph(body, [gate()])
    assert verdict.errors and all(i.rule == "privacy" for i in verdict.errors), verdict


def test_warnings_are_passed_on_not_refused() -> None:
    verdict = admit_graph(graph(gates=["pii-gate", "pii-gate"]), [gate()])
    assert verdict.errors == []
    assert [i.path for i in verdict.warnings] == ["spec.gates[1]"]


def test_a_gate_with_semantic_errors_is_refused() -> None:
    body = builders.gate("g", {"name": "pii", "allowedRegions": []})
    verdict = admit_gate(body)
    assert [i.path for i in verdict.errors] == ["spec.tags[0].allowedRegions"]
    body["spec"]["tags"][0]["allowedRegions"] = ["eu-west"]
    assert admit_gate(body).errors == []


def test_settings_from_the_environment() -> None:
    assert OperatorSettings.from_env({}).webhook is None
    local = OperatorSettings.from_env(
        {"MODULEMESH_WEBHOOK_PORT": "9443", "MODULEMESH_WEBHOOK_HOST": "127.0.0.1"}
    ).webhook
    assert local == WebhookSettings(port=9443, host="127.0.0.1")
    in_cluster = OperatorSettings.from_env(
        {
            "MODULEMESH_WEBHOOK_PORT": "9443",
            "MODULEMESH_WEBHOOK_SERVICE": "modulemesh-system/modulemesh-webhook",
            "MODULEMESH_WEBHOOK_FAILURE_POLICY": "Fail",
        }
    ).webhook
    assert in_cluster is not None
    assert in_cluster.service == ("modulemesh-system", "modulemesh-webhook", 443)
    assert in_cluster.failure_policy == "Fail"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MODULEMESH_WEBHOOK_PORT": "https"}, "WEBHOOK_PORT"),
        ({"MODULEMESH_WEBHOOK_PORT": "70000"}, "WEBHOOK_PORT"),
        (
            {"MODULEMESH_WEBHOOK_PORT": "9443", "MODULEMESH_WEBHOOK_SERVICE": "svc"},
            "namespace/name",
        ),
        (
            {"MODULEMESH_WEBHOOK_PORT": "9443", "MODULEMESH_WEBHOOK_FAILURE_POLICY": "Maybe"},
            "Ignore or Fail",
        ),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        OperatorSettings.from_env(env)


def test_the_generated_certificate_serves_tls_for_its_names(tmp_path: Path) -> None:
    cert_path, key_path = self_signed_certificate(["127.0.0.1", "hook.ns.svc"], tmp_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["hook.ns.svc"]
    assert key_path.stat().st_mode & 0o077 == 0  # the key is the owner's alone
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)  # a matching pair


def test_the_configuration_names_the_service_in_a_cluster_and_its_namespaces() -> None:
    settings = WebhookSettings(
        port=9443, service=("modulemesh-system", "modulemesh-webhook", 443), failure_policy="Fail"
    )
    server, ca_file = webhook_server(settings)
    cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "modulemesh-webhook.modulemesh-system.svc" in sans.get_values_for_type(x509.DNSName)
    assert server.port == 9443 and server.certfile == str(ca_file)
    config = webhook_configuration(settings, ca_file.read_bytes(), ("team-b", "team-a"))
    assert config["metadata"]["name"] == "modulemesh.io"
    hooks = {h["name"]: h for h in config["webhooks"]}
    assert set(hooks) == {"modulegraphs.modulemesh.io", "privacygates.modulemesh.io"}
    graphs = hooks["modulegraphs.modulemesh.io"]
    assert graphs["clientConfig"]["service"] == {
        "namespace": "modulemesh-system",
        "name": "modulemesh-webhook",
        "port": 443,
        "path": "/modulegraphs",  # kopf serves each handler under its id
    }
    assert base64.b64decode(graphs["clientConfig"]["caBundle"]) == ca_file.read_bytes()
    assert graphs["failurePolicy"] == "Fail" and graphs["sideEffects"] == "None"
    assert graphs["rules"][0]["resources"] == ["modulegraphs"]  # never status
    assert graphs["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert graphs["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a", "team-b"]


def test_a_local_operator_is_called_by_url_everywhere() -> None:
    settings = WebhookSettings(port=18443, host="127.0.0.1")
    _, ca_file = webhook_server(settings)
    config = webhook_configuration(settings, ca_file.read_bytes())
    for hook in config["webhooks"]:
        plural = hook["rules"][0]["resources"][0]
        assert hook["clientConfig"]["url"] == f"https://127.0.0.1:18443/{plural}"
        assert "namespaceSelector" not in hook
        assert hook["failurePolicy"] == "Ignore"


def test_the_configuration_without_a_ca_bundle_leaves_it_to_the_operator() -> None:
    settings = WebhookSettings(port=9443, service=("modulemesh-system", "modulemesh-webhook", 443))
    config = webhook_configuration(settings)
    assert [h["name"] for h in config["webhooks"]] == list(WEBHOOKS)
    for hook in config["webhooks"]:
        assert "caBundle" not in hook["clientConfig"]
        assert set(hook["clientConfig"]) == {"service"}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([], "--webhook-port"),
        (["--webhook-port", "9443", "--service", "just-a-name"], "namespace/name"),
        (["--webhook-port", "70000"], "not a port number"),
    ],
)
def test_webhook_configuration_command_refuses_bad_settings_in_one_line(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("MODULEMESH_WEBHOOK_PORT", "MODULEMESH_WEBHOOK_SERVICE"):
        monkeypatch.delenv(key, raising=False)
    assert main(["webhook-configuration", *args]) == 2
    out = capsys.readouterr()
    assert out.out == "" and named in out.err and len(out.err.strip().splitlines()) == 1
