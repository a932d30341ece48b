"""values.schema.json: it declares every value (no undeclared keys anywhere), and helm refuses
bad values before rendering anything, with a message naming the offending field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.helm import CHART, Helm

SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())


def resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    assert ref.startswith("#/definitions/"), ref
    target: Mapping[str, Any] = SCHEMA["definitions"][ref.removeprefix("#/definitions/")]
    return target


def walk(
    schema: Mapping[str, Any], value: Any, path: str
) -> Iterator[tuple[str, Mapping[str, Any], Any]]:
    schema = resolve(schema)
    yield path, schema, value
    if isinstance(value, dict) and "properties" in schema:
        for key, child in value.items():
            assert key in schema["properties"], f"{path}.{key} is not declared in the schema"
            yield from walk(schema["properties"][key], child, f"{path}.{key}")


def test_every_value_is_declared_and_objects_are_closed() -> None:
    assert SCHEMA["additionalProperties"] is False
    seen = 0
    for path, schema, value in walk(SCHEMA, VALUES, "values"):
        seen += 1
        if isinstance(value, dict) and "properties" in schema:
            assert schema.get("additionalProperties") is False, f"{path} accepts unknown keys"
            assert set(schema["properties"]) >= set(value), path
    assert seen > 30
    # and every declared top-level value has a default in values.yaml
    assert set(SCHEMA["properties"]) == set(VALUES)


def test_default_values_validate(helm: Helm) -> None:
    helm.template()


BAD_VALUES = [
    pytest.param({"logFormat": "xml"}, "logFormat", id="log-format-enum"),
    pytest.param(
        {"webhook": {"failurePolicy": "Maybe"}}, "failurePolicy", id="webhook-failure-policy"
    ),
    pytest.param({"webhook": {"port": 443}}, "port", id="webhook-privileged-port"),
    pytest.param({"gpuResourceName": "gpu"}, "gpuResourceName", id="gpu-resource-without-domain"),
    pytest.param({"watchNamespaces": ["Team_A"]}, "watchNamespaces", id="namespace-not-dns-label"),
    pytest.param({"watchNamespaces": ["a", "a"]}, "watchNamespaces", id="duplicate-namespaces"),
    pytest.param({"watchNamespaces": "team-a"}, "watchNamespaces", id="namespaces-not-a-list"),
    pytest.param({"envelopeInterval": 0}, "envelopeInterval", id="envelope-interval-zero"),
    pytest.param({"envelopeInterval": "15s"}, "envelopeInterval", id="envelope-interval-string"),
    pytest.param({"resyncInterval": 1}, "resyncInterval", id="resync-too-often"),
    pytest.param({"healthPort": 80}, "healthPort", id="privileged-port"),
    pytest.param({"imagess": {}}, "imagess", id="unknown-top-level-key"),
    pytest.param(
        {"images": {"operator": {"tag": "has space"}}}, "images/operator/tag", id="bad-tag"
    ),
    pytest.param(
        {"images": {"runtime": {"digest": "md5:abc"}}}, "images/runtime/digest", id="bad-digest"
    ),
    pytest.param({"images": {"runtimeGPU": {}}}, "runtimeGPU", id="misspelt-image-key"),
    pytest.param({"images": {"pullPolicy": "Sometimes"}}, "images/pullPolicy", id="pull-policy"),
    pytest.param(
        {"resources": {"requests": {"cpu": "lots"}}}, "resources/requests/cpu", id="bad-quantity"
    ),
    pytest.param({"resources": {"limit": {"cpu": "1"}}}, "limit", id="resources-typo"),
    pytest.param(
        {"sidecar": {"resources": {"requests": {"cpu": "1 core"}}}},
        "sidecar/resources/requests/cpu",
        id="sidecar-cpu",
    ),
    pytest.param(
        {"sidecar": {"resources": {"limits": {"memory": 268435456}}}},
        "sidecar/resources/limits/memory",
        id="sidecar-memory-not-a-string",
    ),
    pytest.param(
        {"sidecar": {"resources": {"limits": {"cpu": "1"}}}}, "cpu", id="sidecar-cpu-limit"
    ),
    pytest.param(
        {"serviceAccount": {"create": "yes"}}, "serviceAccount/create", id="bool-as-string"
    ),
    pytest.param({"rbac": {"create": True, "wildcards": True}}, "wildcards", id="rbac-unknown-key"),
    pytest.param(
        {"tolerations": [{"key": "a", "operator": "Maybe"}]},
        "tolerations/0/operator",
        id="toleration-operator",
    ),
]


@pytest.mark.parametrize("overrides,field", BAD_VALUES)
def test_bad_values_are_refused_naming_the_field(
    helm: Helm, tmp_path: Path, overrides: dict[str, Any], field: str
) -> None:
    values = tmp_path / "bad.yaml"
    values.write_text(yaml.safe_dump(overrides))
    for proc in (helm.template([values], check=False), helm.lint([values], check=False)):
        assert proc.returncode != 0, f"accepted {overrides}:\n{proc.stdout}"
        message = proc.stderr + proc.stdout
        assert "schema" in message, message
        assert field in message, f"message does not name {field}:\n{message}"
