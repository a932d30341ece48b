"""Semantic validation of a graph's shape: unique names, references with suggestions, entry,
node and fallback cycles, reachability, switch fall-through, split weights, CEL conditions,
ensemble bounds and tensor mapping between steps. Every case checks the field path named."""

from __future__ import annotations

from typing import Any

import pytest

from api.graph_builders import BASE_GRAPH, check, graph, module, one_error, one_warning

MODULES = BASE_GRAPH["spec"]["modules"]


def routing(*nodes: dict[str, Any], entry: str = "main") -> dict[str, Any]:
    return {"entry": entry, "nodes": list(nodes)}


def seq(name: str, *targets: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "type": "sequence", "steps": list(targets)}


def test_baseline_graph_has_no_issues() -> None:
    assert check(graph()) == []


def test_all_problems_are_reported_at_once() -> None:
    doc = graph(
        modules=[*MODULES, module("embedder")],
        routing=routing(seq("main", {"module": "embeder"}, {"module": "classifier"}), entry="x"),
    )
    issues = check(doc)
    one_error(issues, "spec.modules[2].name", "'embedder'", "spec.modules[0]", "unique")
    one_error(issues, "spec.routing.entry", "'x'")
    one_error(issues, "spec.routing.nodes[0].steps[0].module", "did you mean 'embedder'")


@pytest.mark.parametrize("name", ["team.graph", "1st-graph", "graph-", "Graph"])
def test_graph_name_must_make_valid_service_names(name: str) -> None:
    doc = graph()
    doc["metadata"]["name"] = name
    one_error(check(doc), "metadata.name", repr(name), "DNS-1035", "no dots")


def test_a_long_graph_name_is_fine() -> None:
    doc = graph()
    doc["metadata"]["name"] = "g" * 120  # the operator cuts and hashes it to 63 characters
    assert check(doc) == []


def test_duplicate_node_names() -> None:
    doc = graph(
        routing=routing(seq("main", {"module": "embedder"}), seq("main", {"module": "classifier"}))
    )
    one_error(check(doc), "spec.routing.nodes[1].name", "node name 'main'", "spec.routing.nodes[0]")


def test_missing_entry_suggests_closest_node() -> None:
    doc = graph(
        routing=routing(seq("main", {"module": "embedder"}, {"module": "classifier"}), entry="mian")
    )
    one_error(check(doc), "spec.routing.entry", "'mian' does not exist", "did you mean 'main'")


def test_unknown_module_lists_known_ones_when_nothing_is_close() -> None:
    doc = graph(routing=routing(seq("main", {"module": "embedder"}, {"module": "zzz"})))
    issue = one_error(check(doc), "spec.routing.nodes[0].steps[1].module", "'zzz' does not exist")
    assert "known modules: classifier, embedder" in issue.message


def test_module_reference_to_a_node_says_to_write_node() -> None:
    doc = graph(
        routing=routing(
            seq("main", {"module": "embedder"}, {"module": "tail"}),
            seq("tail", {"module": "classifier"}),
        )
    )
    one_error(check(doc), "spec.routing.nodes[0].steps[1].module", "write `node: tail`")


def test_unknown_node_reference() -> None:
    doc = graph(
        routing=routing(
            seq("main", {"module": "embedder"}, {"node": "tial"}),
            seq("tail", {"module": "classifier"}),
        )
    )
    one_error(check(doc), "spec.routing.nodes[0].steps[1].node", "'tial'", "did you mean 'tail'")


def test_node_reference_to_a_module_says_to_write_module() -> None:
    doc = graph(routing=routing(seq("main", {"module": "embedder"}, {"node": "classifier"})))
    one_error(check(doc), "spec.routing.nodes[0].steps[1].node", "write `module: classifier`")


def test_unknown_fallback_suggests_closest_module() -> None:
    doc = graph(modules=[MODULES[0], module("classifier", fallback="embeder")])
    one_error(
        check(doc),
        "spec.modules[1].fallback",
        "'embeder' does not exist",
        "did you mean 'embedder'",
    )


def test_node_cycle_is_reported_once_at_the_closing_reference() -> None:
    doc = graph(
        routing=routing(
            seq("main", {"module": "embedder"}, {"node": "a"}),
            seq("a", {"module": "classifier"}, {"node": "b"}),
            seq("b", {"node": "a"}),
        )
    )
    issues = check(doc)
    issue = one_error(issues, "spec.routing.nodes[2].steps[0].node", "node cycle a -> b -> a")
    assert sum("node cycle" in i.message for i in issues) == 1, issue


def test_self_referencing_node_is_a_cycle() -> None:
    doc = graph(
        routing=routing(
            seq("main", {"module": "embedder"}, {"module": "classifier"}, {"node": "main"})
        )
    )
    one_error(check(doc), "spec.routing.nodes[0].steps[2].node", "node cycle main -> main")


def test_fallback_cycle() -> None:
    doc = graph(
        modules=[
            module("embedder", fallback="classifier"),
            module("classifier", fallback="embedder"),
        ]
    )
    issues = check(doc)
    one_error(
        issues, "spec.modules[0].fallback", "fallback cycle embedder -> classifier -> embedder"
    )
    assert sum("fallback cycle" in i.message for i in issues) == 1


def test_fallback_to_itself_is_a_cycle() -> None:
    doc = graph(modules=[MODULES[0], module("classifier", fallback="classifier")])
    one_error(check(doc), "spec.modules[1].fallback", "fallback cycle classifier -> classifier")


def test_fallback_chain_without_cycle_is_fine() -> None:
    doc = graph(modules=[*MODULES[:1], module("classifier", fallback="spare"), module("spare")])
    assert check(doc) == []


def test_unreachable_node_and_unused_module_are_warnings() -> None:
    doc = graph(
        modules=[*MODULES, module("lonely")],
        routing=routing(
            seq("main", {"module": "embedder"}, {"module": "classifier"}),
            seq("orphan", {"module": "lonely"}),
        ),
    )
    issues = check(doc)
    one_warning(issues, "spec.routing.nodes[1]", "'orphan' is not reachable from entry 'main'")
    one_warning(issues, "spec.modules[2]", "'lonely'", "no reachable node")
    assert all(i.severity == "warning" for i in issues)


def switch(**fields: Any) -> dict[str, Any]:
    return {
        "name": "route",
        "type": "switch",
        "cases": [{"when": "'phi' in request.tags", "module": "embedder"}],
        **fields,
    }


def test_switch_without_default_or_on_no_match_is_an_error_saying_what_happens() -> None:
    doc = graph(routing=routing(switch(), seq("main", {"node": "route"}, {"module": "classifier"})))
    one_error(
        check(doc), "spec.routing.nodes[0]", "no default and no onNoMatch", "onNoMatch: reject"
    )


def test_switch_with_default_or_reject_is_valid() -> None:
    for extra in ({"default": {"module": "embedder"}}, {"onNoMatch": "reject"}):
        doc = graph(
            routing=routing(
                seq("main", {"node": "route"}, {"module": "classifier"}), switch(**extra)
            )
        )
        assert check(doc) == [], extra


def test_switch_with_both_default_and_on_no_match_warns() -> None:
    doc = graph(
        routing=routing(
            seq("main", {"node": "route"}, {"module": "classifier"}),
            switch(default={"module": "embedder"}, onNoMatch="reject"),
        )
    )
    one_warning(check(doc), "spec.routing.nodes[1].onNoMatch", "ignored")


def test_switch_condition_errors_name_the_case() -> None:
    cases = [
        {"when": "'phi' in request.tags", "module": "embedder"},
        {"when": "request.tags ==", "module": "embedder"},
        {"when": "output.confidence > 0.5", "module": "embedder"},
        {"when": "size(request.tags)", "module": "embedder"},
    ]
    doc = graph(
        routing=routing(
            seq("main", {"node": "route"}, {"module": "classifier"}),
            switch(cases=cases, onNoMatch="reject"),
        )
    )
    issues = check(doc)
    one_error(issues, "spec.routing.nodes[1].cases[1].when", "not valid CEL")
    one_error(issues, "spec.routing.nodes[1].cases[2].when", "'output'", "may use only: request")
    one_error(issues, "spec.routing.nodes[1].cases[3].when", "not a bool")
    assert len(issues) == 3


def split(*weights: int, mirror: dict[str, Any] | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {
        "name": "main",
        "type": "split",
        "targets": [{"node": "seq", "weight": w} for w in weights],
    }
    if mirror:
        node["mirror"] = mirror
    return node


def test_split_weights_must_sum_to_100() -> None:
    tail = seq("seq", {"module": "embedder"}, {"module": "classifier"})
    one_error(
        check(graph(routing=routing(split(50, 40), tail))),
        "spec.routing.nodes[0].targets",
        "sum to 90 (50 + 40)",
    )
    one_error(
        check(graph(routing=routing(split(60, 60), tail))),
        "spec.routing.nodes[0].targets",
        "sum to 120",
    )
    assert (
        check(graph(routing=routing(split(90, 10, mirror={"node": "seq", "percent": 5}), tail)))
        == []
    )


def cascade(escalate: str) -> dict[str, Any]:
    return {
        "name": "main",
        "type": "cascade",
        "candidates": [{"module": "embedder"}, {"module": "classifier"}],
        "escalateWhen": escalate,
    }


def test_cascade_condition_sees_output_but_not_unknown_variables() -> None:
    assert check(graph(routing=routing(cascade("output.confidence < 0.7")))) == []
    one_error(
        check(graph(routing=routing(cascade("result.confidence < 0.7")))),
        "spec.routing.nodes[0].escalateWhen",
        "'result'",
        "may use only: output, request",
    )


def test_cascade_candidates_out_of_cost_order_warn() -> None:
    doc = graph(
        modules=[module("embedder", cost=5), module("classifier", cost=1)],
        routing=routing(cascade("output.confidence < 0.7")),
    )
    one_warning(check(doc), "spec.routing.nodes[0].candidates[1]", "cheapest")


def validate_node(**fields: Any) -> dict[str, Any]:
    return {
        "name": "main",
        "type": "validate",
        "generator": {"module": "embedder"},
        "validator": {"module": "classifier", "inputs": {"input": "embedder.embedding"}},
        "acceptWhen": "output.outputs['ok'][0] > 0.5",
        **fields,
    }


def test_validate_node_accept_condition_and_mappings() -> None:
    assert check(graph(routing=routing(validate_node()))) == []
    one_error(
        check(graph(routing=routing(validate_node(acceptWhen="ok(")))),
        "spec.routing.nodes[0].acceptWhen",
        "not valid CEL",
    )
    doc = graph(
        routing=routing(
            validate_node(generator={"module": "embedder", "inputs": {"x": "classifier.y"}})
        )
    )
    one_error(check(doc), "spec.routing.nodes[0].generator.inputs.x", "unknown source 'classifier'")


def test_validate_node_roles_need_distinct_step_names() -> None:
    doc = graph(
        routing=routing(
            validate_node(validator={"module": "embedder"}, corrector={"module": "classifier"})
        )
    )
    one_error(check(doc), "spec.routing.nodes[0].validator.name", "'embedder'", "generator")


def test_validate_fallback_without_on_exhausted_fallback_warns() -> None:
    doc = graph(routing=routing(validate_node(fallback={"module": "classifier"})))
    one_warning(check(doc), "spec.routing.nodes[0].fallback", "never used")


def test_ensemble_min_successes_cannot_exceed_steps() -> None:
    node = {
        "name": "main",
        "type": "ensemble",
        "steps": [{"module": "embedder"}, {"module": "classifier"}],
        "minSuccesses": 3,
    }
    one_error(check(graph(routing=routing(node))), "spec.routing.nodes[0].minSuccesses", "only 2")


def test_ensemble_steps_cannot_map_from_each_other() -> None:
    node = {
        "name": "main",
        "type": "ensemble",
        "steps": [
            {"module": "embedder"},
            {"module": "classifier", "inputs": {"input": "embedder.embedding"}},
        ],
    }
    one_error(
        check(graph(routing=routing(node))),
        "spec.routing.nodes[0].steps[1].inputs.input",
        "parallel",
    )


def test_sequence_mapping_must_point_to_an_earlier_step() -> None:
    later = seq(
        "main",
        {"module": "embedder", "inputs": {"input": "classifier.label"}},
        {"module": "classifier"},
    )
    one_error(
        check(graph(routing=routing(later))),
        "spec.routing.nodes[0].steps[0].inputs.input",
        "not run yet",
    )
    unknown = seq(
        "main", {"module": "embedder"}, {"module": "classifier", "inputs": {"input": "embeder.x"}}
    )
    one_error(
        check(graph(routing=routing(unknown))),
        "spec.routing.nodes[0].steps[1].inputs.input",
        "unknown source 'embeder'",
        "did you mean 'embedder'",
    )


def test_named_steps_are_mapping_sources_and_must_be_unique() -> None:
    ok = seq(
        "main",
        {"module": "embedder", "name": "first"},
        {"module": "classifier", "inputs": {"input": "first.embedding"}},
    )
    assert check(graph(routing=routing(ok))) == []
    dup = seq("main", {"module": "embedder"}, {"module": "classifier", "name": "embedder"})
    one_error(
        check(graph(routing=routing(dup))), "spec.routing.nodes[0].steps[1].name", "already used"
    )


def test_step_called_request_is_refused() -> None:
    doc = graph(
        routing=routing(
            seq("main", {"module": "embedder", "name": "request"}, {"module": "classifier"})
        )
    )
    one_error(check(doc), "spec.routing.nodes[0].steps[0].name", "cannot be called 'request'")


def test_sequence_outputs_must_name_a_step() -> None:
    node = seq("main", {"module": "embedder"}, {"module": "classifier"})
    node["outputs"] = {"label": "clasifier.label", "emb": "embedder.embedding"}
    one_error(
        check(graph(routing=routing(node))),
        "spec.routing.nodes[0].outputs.label",
        "did you mean 'classifier'",
    )
