"""The generated CRDs: checked-in files match the models, schemas are structural, CEL rules
compile and agree with the models' own validators, and the reference doc covers every field.

The API server's own verdict (structural schema accepted, CEL cost within budget, admission
refusing invalid objects) is in tests/e2e/test_crds.py.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cel
import pydantic
import pytest
import yaml

from modulemesh.api.crd import KINDS, REGENERATE, crds, rendered_files
from modulemesh.api.crd_docs import reference
from modulemesh.api.crd_rules import RULES
from modulemesh.api.gate import PrivacyGateSpec
from modulemesh.api.graph import ModuleGraphSpec
from modulemesh.api.structural import PRESERVE, VALIDATIONS, Schema

REPO = Path(__file__).resolve().parents[2]

# --- helpers -------------------------------------------------------------------------------


def _schemas() -> list[tuple[str, Schema]]:
    return [
        (c["metadata"]["name"], c["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        for c in crds()
    ]


def _walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node below (and including) ``schema`` with a readable path."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}.*")


ALL_NODES = [(f"{crd}{path}", node) for crd, root in _schemas() for path, node in _walk(root)]
ALL_RULES = [(path, rule) for path, node in ALL_NODES for rule in node.get(VALIDATIONS, [])]


def _cel_failures(schema: Schema, value: Any, path: str = "") -> list[str]:
    """Evaluate every rule of ``schema`` over ``value`` as the API server would, by position.

    ``sum()`` is a Kubernetes CEL list extension the Python library lacks; those rules are
    left to the e2e test against the real API server.
    """
    failures: list[str] = []
    if isinstance(value, dict):
        for rule in schema.get(VALIDATIONS, []):
            if ".sum()" in rule["rule"]:
                continue
            try:
                ok = cel.evaluate(rule["rule"], {"self": value})
            except Exception as exc:  # an evaluation error refuses the object, too
                ok = f"error: {exc}"
            if ok is not True:
                failures.append(f"{path}{rule.get('fieldPath', '')}: {rule['message']}")
        for name, child in schema.get("properties", {}).items():
            if name in value:
                failures += _cel_failures(child, value[name], f"{path}.{name}")
        if isinstance(schema.get("additionalProperties"), dict):
            for key, item in value.items():
                failures += _cel_failures(schema["additionalProperties"], item, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            failures += _cel_failures(schema["items"], item, f"{path}[{i}]")
    return failures


def _spec_schema(plural: str) -> Schema:
    root = dict(_schemas())[f"{plural}.modulemesh.io"]
    spec: Schema = root["properties"]["spec"]
    return spec


# --- drift ---------------------------------------------------------------------------------


class TestCheckedInFilesMatchTheModels:
    @pytest.mark.parametrize("name", sorted(rendered_files()))
    def test_crd_file_matches(self, name: str) -> None:
        path = REPO / "crds" / name
        assert path.is_file(), f"crds/{name} is missing; regenerate with: {REGENERATE}"
        assert path.read_text(encoding="utf-8") == rendered_files()[name], (
            f"crds/{name} differs from what the models generate; regenerate with: {REGENERATE}"
        )

    def test_no_yaml_anchors_for_a_model_used_twice(self) -> None:
        # ModelSource is both a module's model and its canary's: written out in full at each.
        for name, text in rendered_files().items():
            if name.endswith(".yaml"):
                assert "&id" not in text and "*id" not in text, name

    def test_no_stale_crd_files(self) -> None:
        on_disk = {p.name for p in (REPO / "crds").glob("*.yaml")}
        assert on_disk == set(rendered_files()), (
            f"crds/ holds files the models do not generate; regenerate with: {REGENERATE}"
        )

    def test_reference_doc_matches(self) -> None:
        path = REPO / "docs" / "crd-reference.md"
        assert path.read_text(encoding="utf-8") == reference(), (
            f"docs/crd-reference.md differs from the models; regenerate with: {REGENERATE}"
        )

    def test_module_command_writes_the_same_files(self, tmp_path: Path) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "modulemesh.api.crd", "--write", str(tmp_path / "crds"),
             "--docs", str(tmp_path / "ref.md")],
            capture_output=True, text=True, check=True, cwd=REPO, timeout=120,
        )  # fmt: skip
        assert "wrote" in proc.stderr
        for name, text in rendered_files().items():
            assert (tmp_path / "crds" / name).read_text(encoding="utf-8") == text
        assert (tmp_path / "ref.md").read_text(encoding="utf-8") == reference()

    def test_module_command_prints_both_crds(self) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "modulemesh.api.crd"],
            capture_output=True, text=True, check=True, cwd=REPO, timeout=120,
        )  # fmt: skip
        docs = list(yaml.safe_load_all(proc.stdout))
        assert [d["spec"]["names"]["kind"] for d in docs] == ["ModuleGraph", "PrivacyGate"]


# --- CRD shape -----------------------------------------------------------------------------


class TestCrdShape:
    @pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
    def test_names_scope_version_and_status(self, kind: Any) -> None:
        doc = next(c for c in crds() if c["spec"]["names"]["kind"] == kind.kind)
        spec = doc["spec"]
        assert doc["metadata"]["name"] == f"{kind.plural}.modulemesh.io"
        assert spec["group"] == "modulemesh.io"
        assert spec["scope"] == "Namespaced"
        assert spec["names"]["shortNames"] == [kind.short_name]
        assert spec["names"]["categories"] == ["modulemesh"]
        (version,) = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}

    def test_short_names(self) -> None:
        assert {c["spec"]["names"]["plural"]: c["spec"]["names"]["shortNames"] for c in crds()} == {
            "modulegraphs": ["mg"],
            "privacygates": ["pgate"],
        }

    def test_modulegraph_printer_columns(self) -> None:
        doc = next(c for c in crds() if c["spec"]["names"]["kind"] == "ModuleGraph")
        columns = doc["spec"]["versions"][0]["additionalPrinterColumns"]
        assert [c["name"] for c in columns] == [
            "Ready",
            "Reason",
            "Modules",
            "GPUs",
            "Rollout",
            "Endpoint",
            "Age",
        ]
        assert columns[4]["jsonPath"] == ".status.rollout"
        assert columns[0]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
        assert columns[1]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'

    @pytest.mark.parametrize("doc", crds(), ids=lambda c: c["metadata"]["name"])
    def test_printer_columns_point_at_schema_fields(self, doc: dict[str, Any]) -> None:
        root = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for column in doc["spec"]["versions"][0]["additionalPrinterColumns"]:
            if column["jsonPath"].startswith(".metadata."):
                continue
            node = root
            for part in re.sub(r"\[[^]]*\]", "", column["jsonPath"]).strip(".").split("."):
                while node.get("type") == "array":
                    node = node["items"]
                assert part in node.get("properties", {}), f"{column['jsonPath']}: no {part}"
                node = node["properties"][part]

    def test_status_is_the_real_schema(self) -> None:
        root = dict(_schemas())["modulegraphs.modulemesh.io"]
        status = root["properties"]["status"]
        assert not status.get(PRESERVE)
        conditions = status["properties"]["conditions"]
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert status["properties"]["modules"]["x-kubernetes-list-map-keys"] == ["name"]

    @pytest.mark.parametrize(
        ("plural", "path"),
        [
            ("modulegraphs", ("modules",)),
            ("modulegraphs", ("routing", "nodes")),
            ("privacygates", ("tags",)),
        ],
    )
    def test_named_lists_are_maps_keyed_by_name(self, plural: str, path: tuple[str, ...]) -> None:
        node = _spec_schema(plural)
        for part in path:
            node = node["properties"][part]
        assert node["x-kubernetes-list-type"] == "map"
        assert node["x-kubernetes-list-map-keys"] == ["name"]

    def test_passthrough_fields_keep_unknown_fields(self) -> None:
        module = _spec_schema("modulegraphs")["properties"]["modules"]["items"]["properties"]
        assert module["affinity"] == {"type": "object", PRESERVE: True}
        assert module["tolerations"]["items"] == {"type": "object", PRESERVE: True}

    def test_routing_node_is_one_object_with_a_type_enum(self) -> None:
        node = _spec_schema("modulegraphs")["properties"]["routing"]["properties"]["nodes"]
        item = node["items"]
        assert item["type"] == "object"
        assert item["properties"]["type"]["enum"] == [
            "sequence", "ensemble", "switch", "split", "cascade", "select", "validate",
        ]  # fmt: skip
        rules = {r["rule"] for r in item[VALIDATIONS]}
        assert "self.type != 'sequence' || has(self.steps)" in rules


# --- structural schema ---------------------------------------------------------------------

FORBIDDEN_KEYS = ("$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "const", "title", "nullable")
SCALARS = {"string": str, "integer": int, "number": (int, float), "boolean": bool}


class TestStructuralSchema:
    @pytest.mark.parametrize(("path", "node"), ALL_NODES, ids=[p for p, _ in ALL_NODES])
    def test_node_is_structural(self, path: str, node: Schema) -> None:
        leftovers = [k for k in FORBIDDEN_KEYS if k in node]
        assert not leftovers, f"{path}: {leftovers} left in the schema"
        assert "type" in node, f"{path}: every node needs a type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert not isinstance(node.get("additionalProperties"), bool), path
        if node["type"] == "object" and not path.endswith(".io.metadata"):  # the API server's own
            assert "properties" in node or "additionalProperties" in node or node.get(PRESERVE)
        if node["type"] == "array":
            assert isinstance(node.get("items"), dict), f"{path}: array without items"

    @pytest.mark.parametrize(("path", "node"), ALL_NODES, ids=[p for p, _ in ALL_NODES])
    def test_defaults_are_valid(self, path: str, node: Schema) -> None:
        if "default" not in node:
            return
        default = node["default"]
        assert default is not None, path
        expected = SCALARS.get(node["type"])
        if expected is not None:
            assert isinstance(default, expected) and not (
                node["type"] != "boolean" and isinstance(default, bool)
            ), f"{path}: default {default!r} is not a {node['type']}"
        if "enum" in node:
            assert default in node["enum"], path
        if "minimum" in node:
            assert default >= node["minimum"], path
        if "maximum" in node:
            assert default <= node["maximum"], path
        if "pattern" in node:
            assert re.search(node["pattern"], default), path

    @pytest.mark.parametrize(("path", "node"), ALL_NODES, ids=[p for p, _ in ALL_NODES])
    def test_list_map_keys_are_required(self, path: str, node: Schema) -> None:
        for key in node.get("x-kubernetes-list-map-keys", []):
            items = node["items"]
            assert key in items.get("required", []) or "default" in items["properties"][key], path


# --- CEL rules -----------------------------------------------------------------------------


class TestCelRules:
    @pytest.mark.parametrize(("path", "rule"), ALL_RULES, ids=[p for p, _ in ALL_RULES])
    def test_rule_compiles(self, path: str, rule: dict[str, str]) -> None:
        cel.compile(rule["rule"])
        assert rule["message"], f"{path}: a rule needs a message"

    @pytest.mark.parametrize(("path", "node"), ALL_NODES, ids=[p for p, _ in ALL_NODES])
    def test_field_paths_name_real_fields(self, path: str, node: Schema) -> None:
        for rule in node.get(VALIDATIONS, []):
            if "fieldPath" in rule:
                field = rule["fieldPath"].lstrip(".")
                assert field in node.get("properties", {}), f"{path}: fieldPath {field}"

    @pytest.mark.parametrize(("path", "node"), ALL_NODES, ids=[p for p, _ in ALL_NODES])
    def test_iterated_lists_and_compared_strings_are_bounded(self, path: str, node: Schema) -> None:
        """Unbounded lists or strings in a rule blow the API server's CEL cost budget."""
        props = node.get("properties", {})
        for rule in node.get(VALIDATIONS, []):
            for field in re.findall(
                r"self\.(\w+)\.(?:all|exists|exists_one|map|filter)\(", rule["rule"]
            ):
                assert "maxItems" in props[field], f"{path}.{field} is iterated but has no maxItems"
            for field in re.findall(r"self\.(\w+) ==|== self\.(\w+)\b", rule["rule"]):
                name = next(f for f in field if f)
                assert "maxLength" in props[name] or "enum" in props[name], f"{path}.{name}"

    def test_every_rule_table_entry_is_in_a_crd(self) -> None:
        messages = {rule["message"] for _, rule in ALL_RULES}
        for rules in RULES.values():
            for rule in rules:
                assert rule.message in messages, f"rule not placed in any CRD: {rule.rule}"


# --- CEL rules agree with the models -------------------------------------------------------

GRAPH: dict[str, Any] = {
    "modules": [
        {"name": "a", "model": {"path": "a.onnx"}, "fallback": "b"},
        {"name": "b", "model": {"uri": "https://models.example/b.onnx", "sha256": "0" * 64}},
    ],
    "routing": {
        "entry": "main",
        "nodes": [
            {"name": "main", "type": "sequence", "steps": [{"module": "a"}, {"node": "pick"}]},
            {
                "name": "pick",
                "type": "switch",
                "cases": [{"when": "true", "module": "a"}],
                "default": {"module": "b"},
            },
            {
                "name": "check",
                "type": "validate",
                "generator": {"module": "a"},
                "validator": {"module": "b"},
                "acceptWhen": "output.ok",
                "onExhausted": "fallback",
                "fallback": {"module": "b"},
            },
        ],
    },
}


def _mutated(path: str, value: Any) -> dict[str, Any]:
    """GRAPH with ``value`` set at a dotted path (``-`` deletes the key)."""
    doc = copy.deepcopy(GRAPH)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(last) if last.isdigit() else last
    if value == "-":
        del node[key]
    else:
        node[key] = value
    return doc


# (case, mutated spec, does the pydantic model refuse it too?)
INVALID = [
    ("two-sources", _mutated("modules.0.model", {"path": "a", "uri": "file:///a"}), True),
    ("no-source", _mutated("modules.0.model", {}), True),
    ("https-unpinned", _mutated("modules.1.model", {"uri": "https://x/b.onnx"}), True),
    ("step-two-targets", _mutated("routing.nodes.0.steps.0.node", "pick"), True),
    ("step-no-target", _mutated("routing.nodes.0.steps.0", {}), True),
    ("switch-no-default", _mutated("routing.nodes.1.default", "-"), False),
    ("validate-no-fallback", _mutated("routing.nodes.2.fallback", "-"), True),
    ("steps-on-switch", _mutated("routing.nodes.1.steps", [{"module": "a"}]), True),
    ("sequence-no-steps", _mutated("routing.nodes.0.steps", "-"), True),
    (
        "ensemble-one-step",
        _mutated(
            "routing.nodes.0", {"name": "main", "type": "ensemble", "steps": [{"module": "a"}]}
        ),
        True,
    ),
    ("entry-missing", _mutated("routing.entry", "nope"), False),
    ("fallback-missing", _mutated("modules.0.fallback", "nope"), False),
    ("fallback-on-without-unhealthy", _mutated("policy", {"fallbackOn": ["Degraded"]}), True),
    ("rollout-step-unheld", _mutated("modules.0.rollout", {"steps": [{"percent": 5}]}), True),
]


class TestRulesAgreeWithModels:
    def test_valid_graph_passes_every_rule(self) -> None:
        ModuleGraphSpec.model_validate(GRAPH)
        assert _cel_failures(_spec_schema("modulegraphs"), GRAPH) == []

    def test_valid_gate_passes_every_rule(self) -> None:
        gate = {
            "mode": "dryrun",
            "tags": [{"name": "phi", "classifiers": [{"type": "header", "header": "x-phi"}]}],
        }
        PrivacyGateSpec.model_validate(gate)
        assert _cel_failures(_spec_schema("privacygates"), gate) == []

    @pytest.mark.parametrize(
        ("case", "spec", "model_refuses"), INVALID, ids=[c[0] for c in INVALID]
    )
    def test_invalid_graph_fails_a_rule(
        self, case: str, spec: dict[str, Any], model_refuses: bool
    ) -> None:
        failures = _cel_failures(_spec_schema("modulegraphs"), spec)
        assert failures, f"{case}: no CEL rule refused it"
        if model_refuses:
            with pytest.raises(pydantic.ValidationError):
                ModuleGraphSpec.model_validate(spec)

    def test_failure_names_the_field(self) -> None:
        failures = _cel_failures(_spec_schema("modulegraphs"), _mutated("routing.entry", "nope"))
        assert failures == [".routing.entry: entry must name a node in nodes"]


# --- reference doc -------------------------------------------------------------------------


class TestReferenceDoc:
    def test_every_spec_and_status_field_is_documented(self) -> None:
        text = reference()
        for crd, root in _schemas():
            for section in ("spec", "status"):
                for path, _ in _walk(root["properties"][section], section):
                    if path != section and not path.endswith(("[]", "*")):
                        assert f"`{path}`" in text, f"{crd}: {path}"

    def test_every_rule_message_is_documented(self) -> None:
        text = reference()
        for _, rule in ALL_RULES:
            assert rule["message"].replace("|", "\\|") in text
