"""The static privacy check: for every tag of every gate a graph names, every module a request
so tagged can reach (through every node kind) must be cleared for the tag in an allowed region,
or have such a module on its fallback chain. Enforce gates make violations errors, dry-run
gates warnings; messages name the module, tag, gate and node path."""

from __future__ import annotations

from typing import Any

import pytest

from api.graph_builders import check, gate, graph, module, one_error, one_warning
from modulemesh.api import Severity

PHI = {"name": "phi", "allowedRegions": ["eu-west"]}
EU = {"clearance": ["phi"], "region": "eu-west"}


def seq(name: str, *targets: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "type": "sequence", "steps": list(targets)}


def mesh(modules: list[dict[str, Any]], *nodes: dict[str, Any]) -> dict[str, Any]:
    return graph(
        modules=modules, gates=["phi-gate"], routing={"entry": "main", "nodes": list(nodes)}
    )


def test_cleared_modules_in_allowed_region_pass() -> None:
    doc = mesh(
        [module("a", **EU), module("b", **EU)], seq("main", {"module": "a"}, {"module": "b"})
    )
    assert check(doc, gate("phi-gate", PHI)) == []


def test_uncleared_module_is_an_error_naming_module_tag_gate_and_path() -> None:
    doc = mesh(
        [module("a", **EU), module("b", region="eu-west")],
        seq("main", {"module": "a"}, {"node": "inner"}),
        seq("inner", {"module": "b"}),
    )
    issue = one_error(
        check(doc, gate("phi-gate", PHI)),
        "spec.routing.nodes[1].steps[0].module",
        "module 'b' is not cleared for tag 'phi'",
        "PrivacyGate 'phi-gate' (enforce)",
        "main.steps[1] -> inner.steps[0]",
        "spec.modules[1]",
    )
    assert issue.rule == "privacy"


def test_dryrun_gate_makes_it_a_warning() -> None:
    doc = mesh([module("a", **EU), module("b")], seq("main", {"module": "a"}, {"module": "b"}))
    issues = check(doc, gate("phi-gate", PHI, mode="dryrun"))
    one_warning(issues, "spec.routing.nodes[0].steps[1].module", "not cleared", "(dryrun)")
    assert all(i.severity is Severity.WARNING for i in issues)


def test_region_outside_allowed_regions_is_non_compliant() -> None:
    doc = mesh(
        [module("a", **EU), module("b", clearance=["phi"], region="us-east")],
        seq("main", {"module": "a"}, {"module": "b"}),
    )
    one_error(
        check(doc, gate("phi-gate", PHI)),
        "spec.routing.nodes[0].steps[1].module",
        "runs in region 'us-east'",
        "only be processed in eu-west",
    )


def test_module_without_region_is_pinned_by_an_enforcing_gate() -> None:
    """Render turns an enforcing gate's regions into required affinity: that is compliant."""
    doc = mesh(
        [module("a", **EU), module("b", clearance=["phi"])],
        seq("main", {"module": "a"}, {"module": "b"}),
    )
    assert check(doc, gate("phi-gate", PHI)) == []


def test_module_without_region_is_reported_under_a_dryrun_gate() -> None:
    """A dry-run gate only prefers its regions, so an unpinned module may land elsewhere."""
    doc = mesh(
        [module("a", **EU), module("b", clearance=["phi"])],
        seq("main", {"module": "a"}, {"module": "b"}),
    )
    issues = check(doc, gate("phi-gate", PHI, mode="dryrun"))
    assert [i.path for i in issues] == ["t.yaml: spec.routing.nodes[0].steps[1].module"]
    assert "sets no region" in issues[0].message and issues[0].severity.value == "warning"


def test_any_region_is_fine_when_the_tag_sets_none() -> None:
    doc = mesh(
        [module("a", clearance=["phi"]), module("b", clearance=["phi"], region="us-east")],
        seq("main", {"module": "a"}, {"module": "b"}),
    )
    assert check(doc, gate("phi-gate", {"name": "phi"})) == []


def test_transitively_cleared_fallback_makes_it_compliant() -> None:
    modules = [
        module("a", **EU),
        module("b", region="us-east", fallback="c"),
        module("c", region="us-east", fallback="d"),
        module("d", **EU),
    ]
    doc = mesh(modules, seq("main", {"module": "a"}, {"module": "b"}))
    assert check(doc, gate("phi-gate", PHI)) == []


# --- placement: the regions a module's constraints leave ------------------------------------

PCI = {"name": "pci", "allowedRegions": ["us-east"]}


def test_cleared_for_tags_whose_regions_do_not_meet_is_unschedulable() -> None:
    # Unpinned, cleared for phi (eu-west only) and pci (us-east only): render would require
    # a node in both regions at once, so the pods could never be scheduled.
    modules = [module("a", clearance=["phi", "pci"])]
    doc = graph(modules=modules, gates=["phi-gate", "pci-gate"],
                routing={"entry": "main", "nodes": [seq("main", {"module": "a"})]})  # fmt: skip
    issue = one_error(
        check(doc, gate("phi-gate", PHI), gate("pci-gate", PCI)),
        "spec.modules[0]",
        "no region satisfies module 'a'",
        "tag 'phi' (PrivacyGate 'phi-gate') allows eu-west",
        "tag 'pci' (PrivacyGate 'pci-gate') allows us-east",
        "never be scheduled",
    )
    assert issue.rule == "privacy"


def test_a_region_outside_a_cleared_tags_regions_is_unschedulable_even_off_path() -> None:
    # b is never on a phi path, but its clearance still pins it (render's node affinity).
    modules = [module("a", **EU), module("b", clearance=["phi"], region="us-east")]
    doc = mesh(modules, seq("main", {"module": "a"}), seq("spare", {"module": "b"}))
    one_error(
        check(doc, gate("phi-gate", PHI)),
        "spec.modules[1]",
        "its region 'us-east'",
        "tag 'phi' (PrivacyGate 'phi-gate') allows eu-west",
    )


def test_dryrun_gates_never_make_a_module_unschedulable() -> None:
    modules = [module("a", **EU), module("b", clearance=["phi"], region="us-east")]
    doc = mesh(modules, seq("main", {"module": "a"}), seq("spare", {"module": "b"}))
    assert not [
        i for i in check(doc, gate("phi-gate", PHI, mode="dryrun")) if "no region" in i.message
    ]


def test_fallback_chain_without_compliant_module_names_the_fallbacks() -> None:
    modules = [
        module("a", **EU),
        module("b", fallback="c"),
        module("c", clearance=["phi"], region="us"),
    ]
    doc = mesh(modules, seq("main", {"module": "a"}, {"module": "b"}))
    one_error(
        check(doc, gate("phi-gate", PHI)),
        "spec.routing.nodes[0].steps[1].module",
        "its fallbacks (c) are not compliant either",
    )


def test_every_tag_of_every_gate_is_checked() -> None:
    doc = mesh([module("a", clearance=["phi"], region="eu-west")], seq("main", {"module": "a"}))
    doc["spec"]["gates"] = ["phi-gate", "pii-gate"]
    issues = check(
        doc, gate("phi-gate", PHI, {"name": "genetic"}), gate("pii-gate", {"name": "pii"})
    )
    path = "spec.routing.nodes[0].steps[0].module"
    messages = [i.message for i in issues if i.path.endswith(path)]
    assert len(messages) == 2
    assert any("'genetic'" in m and "'phi-gate'" in m for m in messages)
    assert any("'pii'" in m and "'pii-gate'" in m for m in messages)


def test_gates_the_graph_does_not_name_do_not_apply() -> None:
    doc = mesh([module("a")], seq("main", {"module": "a"}))
    doc["spec"]["gates"] = []
    assert check(doc, gate("phi-gate", PHI)) == []


def test_unreachable_nodes_are_not_privacy_checked() -> None:
    doc = mesh(
        [module("a", **EU), module("b")],
        seq("main", {"module": "a"}),
        seq("orphan", {"module": "b"}),
    )
    issues = check(doc, gate("phi-gate", PHI))
    assert [i.severity for i in issues] == [
        Severity.WARNING,
        Severity.WARNING,
    ]  # unreachable, unused


# Each node kind, with the field where an uncleared module ``x`` sits.
NODE_KINDS: list[tuple[dict[str, Any], str]] = [
    (
        {"name": "main", "type": "ensemble", "steps": [{"module": "a"}, {"module": "x"}]},
        "steps[1]",
    ),
    (
        {
            "name": "main",
            "type": "switch",
            "cases": [{"when": "true", "module": "a"}],
            "default": {"module": "x"},
        },
        "default",
    ),
    (
        {
            "name": "main",
            "type": "switch",
            "cases": [
                {"when": "true", "module": "x"},
                {"when": "false", "module": "a"},
            ],
            "onNoMatch": "reject",
        },
        "cases[0]",
    ),
    (
        {
            "name": "main",
            "type": "split",
            "targets": [{"module": "a", "weight": 100}],
            "mirror": {"module": "x", "percent": 10},
        },
        "mirror",
    ),
    (
        {
            "name": "main",
            "type": "split",
            "targets": [{"module": "a", "weight": 90}, {"module": "x", "weight": 10}],
        },
        "targets[1]",
    ),
    (
        {"name": "main", "type": "cascade", "candidates": [{"module": "a"}, {"module": "x"}]},
        "candidates[1]",
    ),
    (
        {"name": "main", "type": "select", "candidates": [{"module": "a"}, {"module": "x"}]},
        "candidates[1]",
    ),
    (
        {
            "name": "main",
            "type": "validate",
            "generator": {"module": "x"},
            "validator": {"module": "a"},
            "acceptWhen": "true",
        },
        "generator",
    ),
    (
        {
            "name": "main",
            "type": "validate",
            "generator": {"module": "a"},
            "validator": {"module": "x"},
            "acceptWhen": "true",
        },
        "validator",
    ),
    (
        {
            "name": "main",
            "type": "validate",
            "generator": {"module": "a"},
            "validator": {"module": "a", "name": "check"},
            "corrector": {"module": "x"},
            "acceptWhen": "true",
        },
        "corrector",
    ),
    (
        {
            "name": "main",
            "type": "validate",
            "generator": {"module": "a"},
            "validator": {"module": "a", "name": "check"},
            "acceptWhen": "true",
            "onExhausted": "fallback",
            "fallback": {"module": "x"},
        },
        "fallback",
    ),
]


@pytest.mark.parametrize(
    ("node", "field"), NODE_KINDS, ids=[f"{n['type']}-{f}" for n, f in NODE_KINDS]
)
def test_every_node_kind_is_walked(node: dict[str, Any], field: str) -> None:
    doc = mesh([module("a", **EU), module("x", region="eu-west")], node)
    issues = check(doc, gate("phi-gate", PHI))
    one_error(issues, f"spec.routing.nodes[0].{field}.module", "module 'x'", f"main.{field}")
    assert len(issues) == 1, issues
    cleared = mesh([module("a", **EU), module("x", **EU)], node)
    assert check(cleared, gate("phi-gate", PHI)) == []
