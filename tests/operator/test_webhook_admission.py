"""The admission handlers as the API server reaches them: a real AdmissionReview request goes
through kopf's admission machinery to the operator's own handler functions (the namespace's
graphs and gates come from lists standing in for the API server's answers), and the
AdmissionReview response is checked.

- A CEL typo or type error in a graph is refused with the condition's field path.
- A graph nested deeper than the YAML bound (as JSON) is refused naming the field.
- A PrivacyGate change that makes a graph naming it non-compliant is admitted with a
  warning per graph and problem, or refused under the strict setting; problems the graph
  already had, graphs not naming the gate and dry-run gates (even when strict) do not refuse.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Sequence
from typing import Any

import kopf
import pytest
from api import graph_builders as builders
from kopf._cogs.structs import references
from kopf._core.engines import admission
from kopf._core.reactor.inventory import ResourceMemories

from modulemesh.api import PrivacyGate
from modulemesh.operator.config import OperatorSettings
from modulemesh.operator.kube import GROUP, VERSION
from modulemesh.operator.webhook import gate_admission_handler, graph_admission_handler

NAMESPACE = "team-a"


def review(
    handler: Callable[..., None],
    plural: str,
    obj: dict[str, Any],
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Send ``obj`` as an AdmissionReview (CREATE, or UPDATE from ``old``) to ``handler`` the
    way kopf's webhook server does; the response's ``response`` part."""
    registry = kopf.OperatorRegistry()
    kopf.on.validate(
        GROUP, VERSION, plural, id=plural, operations=["CREATE", "UPDATE"], registry=registry
    )(handler)
    resource = references.Resource(GROUP, VERSION, plural, kind=obj["kind"], namespaced=True)
    request = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": GROUP, "version": VERSION, "kind": obj["kind"]},
            "resource": {"group": GROUP, "version": VERSION, "resource": plural},
            "requestKind": {"group": GROUP, "version": VERSION, "kind": obj["kind"]},
            "name": obj["metadata"]["name"],
            "namespace": NAMESPACE,
            "operation": "CREATE" if old is None else "UPDATE",
            "userInfo": {"username": "admin", "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": old,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
    request = json.loads(json.dumps(request))  # as it arrives: plain JSON
    response = asyncio.run(
        admission.serve_admission_request(
            request,  # type: ignore[arg-type]
            settings=kopf.OperatorSettings(),
            memories=ResourceMemories(),
            memobase=kopf.Memo(),
            registry=registry,
            insights=references.Insights(webhook_resources={resource}),
            indices={},
        )
    )
    assert response["response"]["uid"] == request["request"]["uid"]
    return dict(response["response"])


def graph(**spec: Any) -> dict[str, Any]:
    """The baseline graph, both modules cleared for ``pii``, stored in ``team-a``."""
    body = builders.graph(**spec)
    body["metadata"] = {"name": "fraud", "namespace": NAMESPACE, "uid": "u1"}
    for module in body["spec"]["modules"]:
        module.setdefault("clearance", ["pii"])
    return body


def gate_body(*tags: dict[str, Any], mode: str = "enforce") -> dict[str, Any]:
    body = builders.gate("pii-gate", *tags, mode=mode)
    body["metadata"]["namespace"] = NAMESPACE
    return body


def parsed(body: dict[str, Any]) -> PrivacyGate:
    return PrivacyGate.model_validate(body)


def graph_handler(gates: Sequence[dict[str, Any]] = ()) -> Callable[..., None]:
    return graph_admission_handler(lambda ns: [parsed(g) for g in gates], "default")


def gate_handler(graphs: Sequence[dict[str, Any]], *, strict: bool = False) -> Callable[..., None]:
    return gate_admission_handler(lambda ns: graphs, lambda ns: [], "default", strict=strict)


# --- graphs: CEL and depth ---------------------------------------------------------------------


def switch_graph(when: str) -> dict[str, Any]:
    body = graph()
    body["spec"]["routing"] = {
        "entry": "main",
        "nodes": [
            {
                "name": "main",
                "type": "switch",
                "cases": [{"when": when, "module": "classifier"}],
                "default": {"module": "embedder"},
            }
        ],
    }
    return body


def test_a_valid_switch_is_admitted() -> None:
    answer = review(graph_handler(), "modulegraphs", switch_graph("'phi' in request.tags"))
    assert answer["allowed"] is True, answer


def test_a_cel_typo_is_refused_naming_the_condition_field() -> None:
    answer = review(graph_handler(), "modulegraphs", switch_graph("request.headerz['x'] == 'a'"))
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 422
    message = answer["status"]["message"]
    assert "spec.routing.nodes[0].cases[0].when" in message
    assert "request has no field 'headerz'; did you mean 'headers'?" in message


def test_a_cel_type_error_is_refused_naming_the_condition_field() -> None:
    answer = review(graph_handler(), "modulegraphs", switch_graph("request.priority + 1 == 2"))
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert "spec.routing.nodes[0].cases[0].when" in message
    assert "no `+` for a string and an int" in message


def test_json_nested_past_the_bound_is_refused_naming_the_field() -> None:
    body = graph()
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    body["spec"]["modules"][0]["affinity"] = {"nodeAffinity": deep}
    answer = review(graph_handler(), "modulegraphs", body)
    assert answer["allowed"] is False
    assert (
        "spec.modules[0].affinity.nodeAffinity: nested more than 64 levels deep"
        in (answer["status"]["message"])
    )


# --- gate changes against the graphs that name them -------------------------------------------


def named(body: dict[str, Any]) -> dict[str, Any]:
    body["spec"]["gates"] = ["pii-gate"]
    return body


def pinned_graph() -> dict[str, Any]:
    """A graph naming the gate whose classifier runs in us-east."""
    body = named(graph())
    body["spec"]["modules"][1]["region"] = "us-east"
    return body


OLD = gate_body({"name": "pii"})
EU_ONLY = gate_body({"name": "pii", "allowedRegions": ["eu-west"]})


def test_a_gate_change_that_breaks_a_graph_is_admitted_with_a_warning_per_problem() -> None:
    answer = review(gate_handler([pinned_graph()]), "privacygates", EU_ONLY, old=OLD)
    assert answer["allowed"] is True, answer
    warnings = answer["warnings"]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(
        "ModuleGraph/fraud: spec.routing.nodes[0].steps[1].module: non-compliant: module "
        "'classifier' runs in region 'us-east', but tag 'pii' may only be processed in eu-west"
    )
    assert warnings[1].startswith("ModuleGraph/fraud: spec.modules[1]: no region satisfies")


def test_under_the_strict_setting_the_change_is_refused_naming_the_graph() -> None:
    answer = review(gate_handler([pinned_graph()], strict=True), "privacygates", EU_ONLY, old=OLD)
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 422
    message = answer["status"]["message"]
    assert message.startswith("PrivacyGate 'pii-gate' is invalid: ModuleGraph/fraud: spec.")
    assert "us-east" in message


def test_a_new_tag_the_modules_are_not_cleared_for_is_reported_on_create_too() -> None:
    created = gate_body({"name": "pii"}, {"name": "phi"})
    answer = review(gate_handler([named(graph())], strict=True), "privacygates", created)
    assert answer["allowed"] is False
    assert "is not cleared for tag 'phi'" in answer["status"]["message"]


def test_problems_the_graph_already_had_and_unrelated_graphs_do_not_count() -> None:
    unrelated = graph()
    unrelated["metadata"]["name"] = "other"
    unrelated["spec"]["modules"][1]["region"] = "us-east"
    answer = review(
        gate_handler([pinned_graph(), unrelated], strict=True),
        "privacygates",
        copy.deepcopy(EU_ONLY),
        old=EU_ONLY,  # the same regions as before: nothing new breaks
    )
    assert answer["allowed"] is True, answer
    assert "warnings" not in answer


def test_a_dry_run_gate_only_warns_even_when_strict() -> None:
    dry = gate_body({"name": "pii", "allowedRegions": ["eu-west"]}, mode="dryrun")
    answer = review(gate_handler([pinned_graph()], strict=True), "privacygates", dry, old=OLD)
    assert answer["allowed"] is True, answer
    assert any("ModuleGraph/fraud" in w and "us-east" in w for w in answer["warnings"])


def test_the_strict_setting_comes_from_the_environment() -> None:
    env = {"MODULEMESH_WEBHOOK_PORT": "9443", "MODULEMESH_WEBHOOK_STRICT_GATES": "true"}
    hook = OperatorSettings.from_env(env).webhook
    assert hook is not None and hook.strict_gates
    hook = OperatorSettings.from_env({"MODULEMESH_WEBHOOK_PORT": "9443"}).webhook
    assert hook is not None and not hook.strict_gates
    with pytest.raises(ValueError, match="MODULEMESH_WEBHOOK_STRICT_GATES='yes': expected true"):
        OperatorSettings.from_env({**env, "MODULEMESH_WEBHOOK_STRICT_GATES": "yes"})
