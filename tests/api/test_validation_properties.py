"""Property tests: whatever graph-like document arrives (random structures built from the
real field names plus junk, or a rich valid graph with random parts replaced), loading and
validating it never raises; it validates or yields Issues with a path and a message."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.graph_builders import gate, graph, module
from modulemesh.api import Issue, load_text
from modulemesh.api.loader import parse_object
from modulemesh.api.validation import validate_documents

FIELDS = [
    "apiVersion", "kind", "metadata", "spec", "name", "namespace", "modules", "routing", "entry",
    "nodes", "type", "steps", "module", "node", "cases", "when", "default", "onNoMatch",
    "targets", "weight", "mirror", "percent", "candidates", "escalateWhen", "generator",
    "validator", "corrector", "acceptWhen", "fallback", "onExhausted", "maxAttempts", "gates",
    "policy", "timeoutMs", "callTimeoutMs", "model", "path", "uri", "sha256", "resources", "gpu",
    "gpuType", "gpuResource", "batching", "maxBatchSize", "maxQueue", "maxDelayMs", "clearance",
    "region", "cost", "inputs", "outputs", "tags", "mode", "allowedRegions", "classifiers",
    "header", "minSuccesses", "merge", "soft", "stickyHeader", "health", "circuitBreaker",
    "junk", "", "spec.modules", "0",
]  # fmt: skip
WORDS = [
    "a", "b", "main", "embedder", "classifier", "phi", "request", "eu-west", "sequence",
    "ensemble", "switch", "split", "cascade", "select", "validate", "header", "enforce",
    "dryrun", "reject", "fallback", "returnLast", "ModuleGraph", "PrivacyGate",
    "modulemesh.io/v1alpha1", "request.input", "a.out", "b.x", "'phi' in request.tags",
    "output.confidence < 0.5", "size(request.tags)", "((", "x.y.z", "", "Ünïcode", "1e309",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(FIELDS), children, max_size=6),
    ),
    max_leaves=40,
)
documents = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["modulemesh.io/v1alpha1", "v1"]),
        "kind": st.sampled_from(["ModuleGraph", "PrivacyGate", "Pod"]),
        "metadata": st.one_of(st.fixed_dictionaries({"name": st.sampled_from(WORDS)}), values),
        "spec": values,
    }
)

RICH = graph(
    modules=[
        module("embedder", clearance=["phi"], region="eu-west", fallback="spare"),
        module(
            "classifier",
            batching={"maxBatchSize": 4, "maxDelayMs": 1},
            timeoutMs=500,
            fallback="spare",
        ),
        module("spare", clearance=["phi"], region="eu-west"),
    ],
    gates=["phi-gate"],
    routing={
        "entry": "main",
        "nodes": [
            {
                "name": "main",
                "type": "sequence",
                "steps": [{"module": "embedder"}, {"node": "route"}],
            },
            {
                "name": "route",
                "type": "switch",
                "cases": [{"when": "'phi' in request.tags", "node": "cheap"}],
                "default": {"node": "ab"},
            },
            {
                "name": "cheap",
                "type": "cascade",
                "candidates": [{"module": "embedder"}, {"node": "check"}],
                "escalateWhen": "output.confidence < 0.8",
            },
            {
                "name": "ab",
                "type": "split",
                "targets": [{"module": "classifier", "weight": 50}, {"node": "both", "weight": 50}],
                "mirror": {"module": "spare", "percent": 5},
            },
            {
                "name": "both",
                "type": "ensemble",
                "steps": [{"module": "classifier"}, {"module": "spare"}],
            },
            {
                "name": "check",
                "type": "validate",
                "generator": {"module": "classifier"},
                "validator": {"module": "spare", "inputs": {"x": "classifier.y"}},
                "acceptWhen": "output.confidence > 0.5",
                "onExhausted": "fallback",
                "fallback": {"node": "pick"},
            },
            {"name": "pick", "type": "select", "candidates": [{"module": "embedder"}]},
        ],
    },
)
GATE = gate("phi-gate", {"name": "phi", "allowedRegions": ["eu-west"]})


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``value`` (dict keys and list indexes)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


RICH_PATHS = [p for p in paths(RICH) if len(p) > 1]


def assert_only_issues(issues: list[Issue]) -> None:
    for issue in issues:
        assert isinstance(issue, Issue)
        assert issue.path and issue.message
        str(issue)


def test_rich_graph_is_valid() -> None:
    assert validate_documents(load_text(yaml.safe_dump_all([RICH, GATE]), "r.yaml")) == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(documents, min_size=1, max_size=3))
def test_random_documents_never_crash(docs: list[dict[str, Any]]) -> None:
    text = yaml.safe_dump_all(docs, allow_unicode=True)
    loaded = load_text(text, "fuzz.yaml")
    assert_only_issues(validate_documents(loaded))
    for index, doc in enumerate(docs):
        parsed = parse_object(doc, f"doc{index}")
        if isinstance(parsed, list):
            assert_only_issues(parsed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rich_graph_with_random_replacements_never_crashes(data: st.DataObject) -> None:
    doc = copy.deepcopy(RICH)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        path = data.draw(st.sampled_from(RICH_PATHS))
        parent: Any = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = data.draw(values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed this path
    text = yaml.safe_dump_all([doc, GATE], allow_unicode=True)
    assert_only_issues(validate_documents(load_text(text, "fuzz.yaml")))


@settings(max_examples=300, deadline=None)
@given(condition=st.one_of(st.text(max_size=40), st.sampled_from(WORDS)))
def test_arbitrary_cel_text_never_crashes(condition: str) -> None:
    doc = copy.deepcopy(RICH)
    doc["spec"]["routing"]["nodes"][1]["cases"][0]["when"] = condition
    doc["spec"]["routing"]["nodes"][2]["escalateWhen"] = condition
    text = yaml.safe_dump_all([doc, GATE], allow_unicode=True)
    assert_only_issues(validate_documents(load_text(text, "fuzz.yaml")))
