"""Schema problems found while loading YAML: each names the document and the camelCase field
path (unknown fields, wrong types, bad or missing node ``type``, exactly-one-of rules, bad
YAML, wrong kind or apiVersion), and all of them are reported at once."""

from __future__ import annotations

from pathlib import Path

import yaml

from api.graph_builders import gate, graph, one_error
from modulemesh.api import Issue, load_files, load_text


def issues_of(doc: object) -> list[Issue]:
    return load_text(yaml.safe_dump(doc), "x.yaml").issues


def test_unknown_field_is_named_with_a_hint() -> None:
    doc = graph()
    doc["spec"]["modules"][0]["batching"] = {"maxBatchsize": 4}
    one_error(issues_of(doc), "spec.modules[0].batching.maxBatchsize", "unknown field", "spelling")


def test_wrong_type_is_named() -> None:
    doc = graph()
    doc["spec"]["modules"][1]["replicas"] = "many"
    one_error(issues_of(doc), "spec.modules[1].replicas", "integer")


def test_unknown_node_type_suggests_the_closest_and_lists_all() -> None:
    doc = graph()
    doc["spec"]["routing"]["nodes"][0]["type"] = "sequense"
    issue = one_error(
        issues_of(doc),
        "spec.routing.nodes[0].type",
        "unknown type 'sequense'",
        "did you mean 'sequence'",
    )
    assert "cascade" in issue.message


def test_missing_node_type_lists_the_types() -> None:
    doc = graph()
    del doc["spec"]["routing"]["nodes"][0]["type"]
    one_error(
        issues_of(doc),
        "spec.routing.nodes[0].type",
        "required field is missing",
        "sequence, ensemble",
    )


def test_unknown_classifier_type_in_a_gate() -> None:
    doc = gate("g", {"name": "phi", "classifiers": [{"type": "regex", "header": "x"}]})
    one_error(issues_of(doc), "spec.tags[0].classifiers[0].type", "unknown type 'regex'", "header")


def test_content_classifier_problems_point_at_the_classifier() -> None:
    """No discriminator tag (``.content``) in the path, as for header classifiers."""
    bad = {"type": "content", "detector": "regex", "name": "emp", "pattern": "(a)\\1"}
    doc = gate("g", {"name": "emp", "classifiers": [bad]})
    one_error(issues_of(doc), "spec.tags[0].classifiers[0]", "not valid RE2 syntax")
    doc = gate("g", {"name": "emp", "classifiers": [{"type": "contents", "detector": "email"}]})
    one_error(issues_of(doc), "spec.tags[0].classifiers[0].type", "did you mean 'content'")


def test_target_with_both_module_and_node() -> None:
    doc = graph()
    doc["spec"]["routing"]["nodes"][0]["steps"][0] = {"module": "embedder", "node": "main"}
    one_error(issues_of(doc), "spec.routing.nodes[0].steps[0]", "exactly one of module, node")


def test_missing_required_field() -> None:
    doc = graph()
    del doc["spec"]["modules"][0]["model"]
    one_error(issues_of(doc), "spec.modules[0].model", "required field is missing")


def test_bad_name_pattern() -> None:
    doc = graph()
    doc["spec"]["modules"][0]["name"] = "Embedder_1"
    one_error(issues_of(doc), "spec.modules[0].name", "pattern")


def test_several_schema_problems_at_once() -> None:
    doc = graph()
    doc["spec"]["modules"][0]["replicas"] = -1
    doc["spec"]["modules"][1]["cost"] = "cheap"
    doc["spec"]["routing"]["nodes"][0]["steps"] = []
    issues = issues_of(doc)
    paths = {i.path for i in issues}
    assert {
        "x.yaml: spec.modules[0].replicas",
        "x.yaml: spec.modules[1].cost",
        "x.yaml: spec.routing.nodes[0].steps",
    } <= paths


def test_document_index_is_named_in_multi_document_files() -> None:
    text = yaml.safe_dump_all([gate("g", {"name": "phi"}), {"kind": "Nope"}])
    issues = load_text(text, "x.yaml").issues
    assert [str(i) for i in issues] == [
        "error: x.yaml#2: kind: unknown kind 'Nope'; expected one of ModuleGraph, PrivacyGate"
    ]


def test_invalid_yaml_and_non_mapping_documents() -> None:
    assert "not valid YAML" in load_text("a: [", "x.yaml").issues[0].message
    assert "expected a mapping" in load_text("- 1\n", "x.yaml").issues[0].message


def test_wrong_api_version() -> None:
    doc = graph()
    doc["apiVersion"] = "modulemesh.io/v1"
    one_error(issues_of(doc), "apiVersion", "modulemesh.io/v1alpha1")


def test_unreadable_file_is_an_issue(tmp_path: Path) -> None:
    docs = load_files([tmp_path / "missing.yaml"])
    assert len(docs.issues) == 1
    assert "cannot read file" in docs.issues[0].message


def test_classifier_type_defaults_to_header_as_in_the_crd() -> None:
    # The CRD defaults `type: header`; the models agree, so `modulemesh validate` and the
    # API server accept the same gate.
    doc = gate("g", {"name": "phi", "classifiers": [{"header": "x-phi", "values": ["1"]}]})
    assert issues_of(doc) == []
