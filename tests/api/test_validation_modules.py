"""Semantic validation of modules and graph policy: GPU type needs GPUs, batching bounds
against queue size and call timeout, module timeout against the request timeout, health
thresholds, circuit-breaker bounds, propagated headers, missing and duplicate gates."""

from __future__ import annotations

from typing import Any

from api.graph_builders import BASE_GRAPH, at, check, gate, graph, module, one_error, one_warning

EMBEDDER = BASE_GRAPH["spec"]["modules"][0]


def with_classifier(**fields: Any) -> dict[str, Any]:
    return graph(modules=[EMBEDDER, module("classifier", **fields)])


def test_gpu_type_needs_a_gpu() -> None:
    issues = check(with_classifier(resources={"gpuType": "A100"}))
    one_error(issues, "spec.modules[1].resources.gpuType", "'A100'", "resources.gpu")
    assert check(with_classifier(resources={"gpu": 1, "gpuType": "A100"})) == []


def test_gpu_resource_without_gpu_warns() -> None:
    issues = check(with_classifier(resources={"gpuResource": "amd.com/gpu"}))
    one_warning(issues, "spec.modules[1].resources.gpuResource", "no effect")


def test_max_queue_must_hold_a_batch() -> None:
    issues = check(with_classifier(batching={"maxBatchSize": 32, "maxQueue": 8}))
    one_error(issues, "spec.modules[1].batching.maxQueue", "(8)", "maxBatchSize (32)")
    assert check(with_classifier(batching={"maxBatchSize": 32, "maxQueue": 32})) == []


def test_max_delay_not_below_module_timeout_is_an_error() -> None:
    issues = check(with_classifier(timeoutMs=100, batching={"maxDelayMs": 100}))
    one_error(issues, "spec.modules[1].batching.maxDelayMs", "(100)", "spec.modules[1].timeoutMs")


def test_max_delay_against_graph_call_timeout_when_module_sets_none() -> None:
    doc = with_classifier(batching={"maxDelayMs": 2500})
    one_error(check(doc), "spec.modules[1].batching.maxDelayMs", "spec.policy.callTimeoutMs")


def test_max_delay_over_half_the_timeout_warns() -> None:
    issues = check(with_classifier(timeoutMs=100, batching={"maxDelayMs": 60}))
    one_warning(issues, "spec.modules[1].batching.maxDelayMs", "more than half")
    assert check(with_classifier(timeoutMs=100, batching={"maxDelayMs": 40})) == []


def test_module_timeout_above_request_timeout_warns() -> None:
    doc = with_classifier(timeoutMs=9000)
    doc["spec"]["policy"] = {"timeoutMs": 3000, "callTimeoutMs": 1000}
    one_warning(check(doc), "spec.modules[1].timeoutMs", "9000", "spec.policy.timeoutMs = 3000")
    doc["spec"]["policy"]["timeoutMs"] = 9000
    assert check(doc) == []


def test_call_timeout_above_request_timeout_warns() -> None:
    doc = graph(policy={"timeoutMs": 1000, "callTimeoutMs": 2000})
    one_warning(check(doc), "spec.policy.callTimeoutMs", "2000")


def test_circuit_breaker_base_above_max_is_an_error() -> None:
    doc = graph(policy={"circuitBreaker": {"baseEjectionMs": 5000, "maxEjectionMs": 1000}})
    one_error(check(doc), "spec.policy.circuitBreaker.baseEjectionMs", "maxEjectionMs (1000)")


def test_propagated_headers_must_be_application_headers() -> None:
    assert check(graph(policy={"propagateHeaders": ["x-request-id", "x-tenant"]})) == []
    doc = graph(policy={"propagateHeaders": ["x-request-id", "x-modulemesh-tags", "host"]})
    issues = check(doc)
    one_error(issues, "spec.policy.propagateHeaders[1]", "'x-modulemesh-tags'", "router sets")
    one_error(issues, "spec.policy.propagateHeaders[2]", "'host'")
    one_warning(
        check(graph(policy={"propagateHeaders": ["x-b3", "x-b3"]})),
        "spec.policy.propagateHeaders[1]",
        "listed twice",
    )


def test_propagated_header_names_are_lower_case_tokens() -> None:
    issues = check(graph(policy={"propagateHeaders": ["X-Request-Id"]}))
    assert at(issues, "spec.policy.propagateHeaders[0]"), [str(i) for i in issues]
    issues = check(graph(policy={"propagateHeaders": ["x request"]}))
    assert at(issues, "spec.policy.propagateHeaders[0]"), [str(i) for i in issues]


def test_degraded_error_rate_above_unhealthy_is_an_error() -> None:
    doc = with_classifier(health={"degradedErrorRate": 0.6, "unhealthyErrorRate": 0.5})
    one_error(check(doc), "spec.modules[1].health.degradedErrorRate", "Unhealthy before")


def test_gpu_count_must_be_an_integer() -> None:
    issues = check(with_classifier(resources={"gpu": 1.5}))
    assert at(issues, "spec.modules[1].resources.gpu"), issues
    issues = check(with_classifier(resources={"gpu": "1"}))
    assert at(issues, "spec.modules[1].resources.gpu"), issues


def test_missing_gate_is_named_at_spec_gates() -> None:
    phi = gate("phi-gate", {"name": "phi"})
    issues = check(graph(gates=["phi-gate", "pii-gate"]), phi)
    one_error(issues, "spec.gates[1]", "PrivacyGate 'pii-gate' was not found", "'phi-gate'")
    issues = check(graph(gates=["phi-gate"]))
    one_error(issues, "spec.gates[0]", "'phi-gate' was not found")


def test_gate_listed_twice_warns() -> None:
    issues = check(graph(gates=["g", "g"]), gate("g", {"name": "phi"}))
    one_warning(issues, "spec.gates[1]", "listed twice")


def test_gate_in_another_namespace_does_not_count() -> None:
    other = gate("g", {"name": "phi"})
    other["metadata"]["namespace"] = "elsewhere"
    one_error(check(graph(gates=["g"]), other), "spec.gates[0]", "'g' was not found")


def test_gate_with_duplicate_tags_and_empty_regions() -> None:
    bad = gate("g", {"name": "phi"}, {"name": "phi"}, {"name": "pii", "allowedRegions": []})
    issues = check(bad)
    one_error(issues, "spec.tags[1].name", "already declared at spec.tags[0]")
    one_error(issues, "spec.tags[2].allowedRegions", "nowhere")


def test_two_graphs_with_the_same_name_are_an_error() -> None:
    issues = check(graph(), graph())
    one_error(issues, "metadata.name", "more than once")
