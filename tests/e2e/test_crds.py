"""The generated CRDs on a real kube-apiserver: accepted (structural, CEL cost within budget),
invalid objects refused at admission with the field named, every example accepted, and the
status subresource and printer columns in place.

Objects are checked with ``--dry-run=server``, which runs the full admission chain (schema,
CEL rules, defaulting) without storing anything, so an operator watching the cluster never
sees them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster import Cluster
from e2e.operator_process import install_crds

REPO = Path(__file__).resolve().parents[2]
CRD_NAMES = ("modulegraphs.modulemesh.io", "privacygates.modulemesh.io")

GRAPH: dict[str, Any] = {
    "apiVersion": "modulemesh.io/v1alpha1",
    "kind": "ModuleGraph",
    "metadata": {"name": "crd-check"},
    "spec": {
        "modules": [
            {"name": "small", "model": {"path": "small.onnx"}, "fallback": "large"},
            {"name": "large", "model": {"configMap": {"name": "models", "key": "large.onnx"}}},
        ],
        "routing": {
            "entry": "canary",
            "nodes": [
                {
                    "name": "canary",
                    "type": "split",
                    "targets": [{"module": "small", "weight": 90}, {"node": "pick", "weight": 10}],
                },
                {
                    "name": "pick",
                    "type": "switch",
                    "cases": [{"when": "request.priority == 'critical'", "module": "large"}],
                    "onNoMatch": "reject",
                },
            ],
        },
    },
}


def _graph(**changes: Any) -> dict[str, Any]:
    """GRAPH with ``spec`` keys replaced through a callable: ``modules=lambda m: ...``."""
    doc = copy.deepcopy(GRAPH)
    for key, change in changes.items():
        doc["spec"][key] = change(doc["spec"][key])
    return doc


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node: Any = obj
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    return obj


def _with(path: str, value: Any) -> dict[str, Any]:
    return _set(copy.deepcopy(GRAPH), path, value)


def _dry_run(cluster: Cluster, namespace: str, doc: dict[str, Any]) -> tuple[int, str]:
    proc = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-",
        input=yaml.safe_dump(doc), check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def _numbers_as_json(value: Any) -> Any:
    """``2.0`` comes back from the API server as ``2``; compare numbers by value."""
    if isinstance(value, dict):
        return {k: _numbers_as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_json(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> Cluster:
    """The checked-in CRDs applied to the cluster (left installed: other tests share them)."""
    install_crds(cluster)
    return cluster


class TestCrdsAccepted:
    @pytest.mark.parametrize("name", CRD_NAMES)
    def test_established_with_structural_schema(self, crds: Cluster, name: str) -> None:
        doc = crds.kubectl_json("get", "crd", name)
        conditions = {c["type"]: c["status"] for c in doc["status"]["conditions"]}
        assert conditions.get("Established") == "True"
        assert conditions.get("NamesAccepted") == "True"
        assert conditions.get("NonStructuralSchema", "False") == "False"

    def test_checked_in_crds_are_what_is_served(self, crds: Cluster) -> None:
        served = crds.kubectl_json("get", "crd", "modulegraphs.modulemesh.io")
        on_disk = yaml.safe_load((REPO / "crds" / f"{CRD_NAMES[0]}.yaml").read_text())
        assert _numbers_as_json(served["spec"]["versions"][0]["schema"]) == _numbers_as_json(
            on_disk["spec"]["versions"][0]["schema"]
        ), "the served schema differs from crds/ (the API server dropped or changed something)"

    def test_short_names_and_category_resolve(self, crds: Cluster, namespace: str) -> None:
        for resource in ("mg", "pgate", "modulemesh"):
            crds.kubectl("get", resource, "-n", namespace)

    def test_explain_shows_the_routing_node_types(self, crds: Cluster) -> None:
        out = crds.kubectl("explain", "modulegraph.spec.routing.nodes.type").stdout
        for node_type in ("sequence", "ensemble", "switch", "split", "cascade", "select"):
            assert node_type in out


# (case, invalid graph, text the API server's error must contain)
INVALID = [
    (
        "graph-name-with-a-dot",
        _with("metadata.name", "team.graph"),
        ["metadata.name must be a DNS-1035 label"],
    ),
    (
        "model-path-and-uri",
        _with("spec.modules.0.model", {"path": "a.onnx", "uri": "file:///a.onnx"}),
        ["spec.modules[0].model", "set exactly one of path, uri, configMap, pvc"],
    ),
    (
        "https-uri-without-sha256",
        _with("spec.modules.1.model", {"uri": "https://models.example/large.onnx"}),
        ["spec.modules[1].model.sha256", "an https:// uri must be pinned by sha256"],
    ),
    (
        "split-weights-not-100",
        _with("spec.routing.nodes.0.targets.0.weight", 60),
        ["spec.routing.nodes[0].targets", "split target weights must sum to 100"],
    ),
    (
        "entry-names-missing-node",
        _with("spec.routing.entry", "nowhere"),
        ["spec.routing.entry", "entry must name a node in nodes"],
    ),
    (
        "fractional-gpu",
        _with("spec.modules.0.resources", {"gpu": 1.5}),
        ["spec.modules[0].resources.gpu", "integer"],
    ),
    (
        "fallback-names-missing-module",
        _with("spec.modules.0.fallback", "medium"),
        ["spec.modules", "a module's fallback must name a module in modules"],
    ),
    (
        "switch-without-default-or-onnomatch",
        _graph(
            routing=lambda r: _set(
                r, "nodes.1", {k: v for k, v in r["nodes"][1].items() if k != "onNoMatch"}
            )
        ),
        ["spec.routing.nodes[1].default", "a switch needs a default target or onNoMatch: reject"],
    ),
    (
        "step-with-module-and-node",
        _with("spec.routing.nodes.0.targets.0.node", "pick"),
        ["spec.routing.nodes[0].targets[0]", "set exactly one of module, node"],
    ),
    (
        "field-of-another-node-type",
        _with("spec.routing.nodes.1.steps", [{"module": "small"}]),
        ["spec.routing.nodes[1].steps", "steps is only allowed when type is sequence or ensemble"],
    ),
    (
        "duplicate-module-names",
        _with("spec.modules.1.name", "small"),
        ["spec.modules[1]", "Duplicate value"],
    ),
    (
        "validate-fallback-without-target",
        _graph(
            routing=lambda r: _set(
                r,
                "nodes.1",
                {
                    "name": "pick",
                    "type": "validate",
                    "generator": {"module": "small"},
                    "validator": {"module": "large"},
                    "acceptWhen": "output.ok",
                    "onExhausted": "fallback",
                },
            )
        ),
        ["spec.routing.nodes[1].fallback", "onExhausted: fallback needs a fallback target"],
    ),
]


class TestAdmissionRefusesInvalidObjects:
    def test_the_base_graph_is_valid(self, crds: Cluster, namespace: str) -> None:
        code, out = _dry_run(crds, namespace, GRAPH)
        assert code == 0, out

    @pytest.mark.parametrize(("case", "doc", "expected"), INVALID, ids=[c[0] for c in INVALID])
    def test_refused_naming_the_field(
        self, crds: Cluster, namespace: str, case: str, doc: dict[str, Any], expected: list[str]
    ) -> None:
        code, out = _dry_run(crds, namespace, doc)
        assert code != 0, f"{case}: the API server accepted an invalid object"
        for text in expected:
            assert text in out, f"{case}: {text!r} not in {out}"

    def test_invalid_gate_refused(self, crds: Cluster, namespace: str) -> None:
        gate = {
            "apiVersion": "modulemesh.io/v1alpha1",
            "kind": "PrivacyGate",
            "metadata": {"name": "bad"},
            "spec": {"mode": "audit-only", "tags": [{"name": "PHI"}]},
        }
        code, out = _dry_run(crds, namespace, gate)
        assert code != 0
        assert "spec.mode" in out and "spec.tags[0].name" in out, out


def _example_documents() -> list[tuple[str, dict[str, Any]]]:
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if isinstance(doc, dict) and doc.get("kind") in ("ModuleGraph", "PrivacyGate"):
                docs.append((f"{path.name}#{i}", doc))
    return docs


EXAMPLES = _example_documents()


class TestExamplesAccepted:
    def test_there_are_examples(self) -> None:
        assert EXAMPLES, "examples/ holds no ModuleGraph or PrivacyGate"

    @pytest.mark.parametrize(("name", "doc"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
    def test_example_accepted(
        self, crds: Cluster, namespace: str, name: str, doc: dict[str, Any]
    ) -> None:
        code, out = _dry_run(crds, namespace, doc)
        assert code == 0, f"{name}: {out}"


class TestStatusAndColumns:
    def test_status_subresource_validates_and_columns_show(
        self, crds: Cluster, namespace: str
    ) -> None:
        crds.apply(GRAPH, namespace=namespace)
        name = GRAPH["metadata"]["name"]
        status = {
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "ModulesNotReady",
                    "message": "1 of 2 modules ready",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "modulesReady": "1/2",
            "gpus": 0,
            "rollout": "clf: Progressing 2/4 (20%)",
            "endpoint": f"http://{name}-router.{namespace}.svc:8080",
        }
        patch = ["patch", "mg", name, "-n", namespace, "--subresource=status", "--type=merge"]
        crds.kubectl(*patch, "-p", json.dumps({"status": status}))
        bad = {"status": {"conditions": [{**status["conditions"][0], "status": "Maybe"}]}}
        proc = crds.kubectl(*patch, "-p", json.dumps(bad), check=False)
        assert proc.returncode != 0 and "status.conditions[0].status" in proc.stderr
        header, row = crds.kubectl("get", "mg", name, "-n", namespace).stdout.splitlines()
        assert header.split() == [
            "NAME", "READY", "REASON", "MODULES", "GPUS", "ROLLOUT", "ENDPOINT", "AGE",
        ]  # fmt: skip
        assert row.split()[:4] == [name, "False", "ModulesNotReady", "1/2"]
        assert "   clf: Progressing 2/4 (20%)   " in row

    def test_gate_columns_show_mode_tags_and_graphs(self, crds: Cluster, namespace: str) -> None:
        gate = {
            "apiVersion": "modulemesh.io/v1alpha1",
            "kind": "PrivacyGate",
            "metadata": {"name": "phi"},
            "spec": {"tags": [{"name": "phi"}, {"name": "pii"}]},
        }
        crds.apply(gate, namespace=namespace)
        header, row = crds.kubectl("get", "pgate", "phi", "-n", namespace).stdout.splitlines()
        assert header.split() == [
            "NAME", "MODE", "TAGS", "GRAPHS", "HITS", "REDACTED", "DENIED", "BUDGET", "AGE",
        ]  # fmt: skip
        assert row.split()[:2] == ["phi", "enforce"]  # mode defaulted by the schema
        # Tags, graph count, detector counts and budget come from status (the operator writes
        # them from the kopf index and the routers' reports; here, by hand).
        status = {"status": {
            "tags": "phi,pii", "graphCount": 2, "graphs": ["a", "b"],
            "detectorHits": {"pii/email": 7}, "hits": 7, "redactions": 5, "denials": 2,
            "dpAnswers": 3, "dpRefusals": 1, "budgetUsed": "1.5/2",
            "budget": {"epsilon": 2, "principals": 1, "spentEpsilon": 1.5,
                       "maxSpentEpsilon": 1.5, "resetAt": "2026-12-07T00:00:00Z"},
        }}  # fmt: skip
        crds.kubectl(
            "patch", "pgate", "phi", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps(status),
        )  # fmt: skip
        _, row = crds.kubectl("get", "pgate", "phi", "-n", namespace).stdout.splitlines()
        assert row.split()[:8] == ["phi", "enforce", "phi,pii", "2", "7", "5", "2", "1.5/2"]
