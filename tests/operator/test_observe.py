"""Status computation from observed Deployments, Pods and envelopes (no cluster needed).

Covers per-module state (replicas, GPUs, unschedulable reason, envelope summary and staleness),
each condition's status and reason (Degraded also for a GPU module serving on the CPU
provider), and that Ready never depends on envelopes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from modulemesh.api import Issue, ModuleGraph, Severity
from modulemesh.operator.observe import (
    Observation,
    compute_status,
    envelope_summary,
    parse_envelopes,
)

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)

GRAPH = ModuleGraph.model_validate(
    {
        "apiVersion": "modulemesh.io/v1alpha1",
        "kind": "ModuleGraph",
        "metadata": {"name": "g", "namespace": "ns", "generation": 2},
        "spec": {
            "modules": [
                {"name": "emb", "model": {"path": "e.onnx"}, "replicas": 2},
                {"name": "clf", "model": {"path": "c.onnx"}, "resources": {"gpu": 2}},
            ],
            "routing": {
                "entry": "main",
                "nodes": [
                    {
                        "name": "main",
                        "type": "sequence",
                        "steps": [{"module": "emb"}, {"module": "clf"}],
                    }
                ],
            },
        },
    }
)


def deployment(component: str, module: str | None, ready: int) -> dict[str, Any]:
    labels = {"app.kubernetes.io/component": component, "modulemesh.io/graph": "g"}
    if module:
        labels["modulemesh.io/module"] = module
    return {
        "metadata": {"name": f"g-{module or 'router'}", "labels": labels},
        "status": {"readyReplicas": ready},
    }


def pod(module: str, *, unschedulable: str | None = None) -> dict[str, Any]:
    conditions = (
        [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        ]
        if unschedulable
        else [{"type": "PodScheduled", "status": "True"}]
    )
    labels = {"app.kubernetes.io/component": "module", "modulemesh.io/module": module}
    return {"metadata": {"labels": labels}, "status": {"conditions": conditions}}


def envelope(state: str = "Healthy", age_s: float = 1.0, **extra: Any) -> dict[str, Any]:
    return {
        "state": state,
        "reason": extra.pop("reason", ""),
        "requestRate": 10.0,
        "latency": {"p50": 0.001, "p95": 0.002, "p99": 0.004},
        "errorRate": 0.0,
        "confidence": 0.9,
        "provider": "CPUExecutionProvider",
        "timestamp": (NOW - timedelta(seconds=age_s)).timestamp(),
        **extra,
    }


def observe(**kwargs: Any) -> tuple[dict[str, Any], dict[str, tuple[str, str, str]]]:
    fields, updates = compute_status(Observation(graph=GRAPH, now=NOW, **kwargs))
    return fields, {u.type: (u.status, u.reason, u.message) for u in updates}


def healthy_cluster() -> dict[str, Any]:
    return {
        "deployments": [
            deployment("module", "emb", 2),
            deployment("module", "clf", 1),
            deployment("router", None, 1),
        ],
        "pods": [pod("emb"), pod("emb"), pod("clf")],
        # clf has GPUs and got them; emb runs on the CPU as asked.
        "envelopes": {"emb": envelope(), "clf": envelope(provider="CUDAExecutionProvider")},
        "endpoint": "http://g-router.ns.svc.cluster.local:8080",
    }


def test_everything_ready_gives_ready_true_and_module_details() -> None:
    fields, conds = observe(**healthy_cluster())
    assert conds["Ready"][:2] == ("True", "GraphReady")
    assert fields["modulesReady"] == "2/2"
    assert fields["gpus"] == 2
    clf = next(m for m in fields["modules"] if m["name"] == "clf")
    assert (
        clf["gpus"] == 2
        and clf["readyReplicas"] == 1
        and clf["provider"] == "CUDAExecutionProvider"
    )
    assert clf["envelope"]["state"] == "Healthy"
    assert clf["envelope"]["p99Ms"] == 4.0
    assert conds["Degraded"][:2] == ("False", "Healthy")


def test_unschedulable_pod_names_the_module_and_the_scheduler_reason() -> None:
    cluster = healthy_cluster()
    cluster["deployments"][1] = deployment("module", "clf", 0)
    cluster["pods"][2] = pod(
        "clf", unschedulable="0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    )
    fields, conds = observe(**cluster)
    status, reason, message = conds["Scheduled"]
    assert (status, reason) == ("False", "Unschedulable")
    assert "module clf" in message and "Insufficient nvidia.com/gpu" in message
    clf = next(m for m in fields["modules"] if m["name"] == "clf")
    assert "Insufficient nvidia.com/gpu" in clf["unschedulable"]
    assert conds["Ready"][:2] == ("False", "Unschedulable")
    assert fields["modulesReady"] == "1/2"


def test_modules_not_ready_lists_replicas() -> None:
    cluster = healthy_cluster()
    cluster["deployments"][0] = deployment("module", "emb", 1)
    _, conds = observe(**cluster)
    assert conds["ModulesReady"][:2] == ("False", "ModulesNotReady")
    assert "emb (1/2 replicas ready)" in conds["ModulesReady"][2]


def test_router_not_ready_blocks_ready() -> None:
    cluster = healthy_cluster()
    cluster["deployments"][2] = deployment("router", None, 0)
    _, conds = observe(**cluster)
    assert conds["RouterReady"][:2] == ("False", "RouterNotReady")
    assert conds["Ready"][:2] == ("False", "RouterNotReady")


def test_degraded_envelope_sets_degraded_but_not_ready_false() -> None:
    cluster = healthy_cluster()
    cluster["envelopes"]["clf"] = envelope("Degraded", reason="error rate 0.12 > 0.05")
    _, conds = observe(**cluster)
    assert conds["Degraded"][:2] == ("True", "ModuleDegraded")
    assert "clf is Degraded: error rate 0.12 > 0.05" in conds["Degraded"][2]
    assert conds["Ready"][0] == "True"


def test_a_gpu_module_on_the_cpu_provider_is_degraded_naming_it() -> None:
    cluster = healthy_cluster()
    cluster["envelopes"]["clf"] = envelope(provider="CPUExecutionProvider")
    fields, conds = observe(**cluster)
    status, reason, message = conds["Degraded"]
    assert (status, reason) == ("True", "GPUFallbackToCPU")
    assert "clf has resources.gpu 2 but serves on CPUExecutionProvider" in message
    assert "emb" not in message  # a CPU module on the CPU provider is what it asked for
    clf = next(m for m in fields["modules"] if m["name"] == "clf")
    assert clf["provider"] == "CPUExecutionProvider"
    assert conds["Ready"][:2] == ("True", "GraphReady")  # it serves, only slower


def test_a_gpu_fallback_is_listed_beside_a_degraded_envelope() -> None:
    cluster = healthy_cluster()
    cluster["envelopes"]["clf"] = envelope(provider="CPUExecutionProvider")
    cluster["envelopes"]["emb"] = envelope("Unhealthy", reason="error rate 0.6 > 0.5")
    _, conds = observe(**cluster)
    status, reason, message = conds["Degraded"]
    assert (status, reason) == ("True", "ModuleDegraded")
    assert "emb is Unhealthy: error rate 0.6 > 0.5" in message
    assert "clf has resources.gpu 2 but serves on CPUExecutionProvider" in message


def test_a_stale_cpu_provider_envelope_is_not_taken_as_a_fallback() -> None:
    # What the module runs on now is unknown: the envelope is older than the bound.
    cluster = healthy_cluster()
    cluster["envelopes"]["clf"] = envelope(provider="CPUExecutionProvider", age_s=600)
    _, conds = observe(envelope_stale_after_s=90, **cluster)
    assert conds["Degraded"][:2] == ("False", "Healthy")


def test_unreachable_router_envelopes_are_unknown_never_flapping_ready() -> None:
    cluster = healthy_cluster()
    cluster["envelopes"] = None
    fields, conds = observe(envelope_error="router envelopes unreachable", **cluster)
    assert conds["Degraded"][:2] == ("Unknown", "EnvelopesUnknown")
    assert all(m["envelope"]["state"] == "Unknown" for m in fields["modules"])
    assert conds["Ready"][0] == "True"


def test_stale_envelope_shows_unknown() -> None:
    summary = envelope_summary(envelope(age_s=600), now=NOW, stale_after_s=90)
    assert summary["state"] == "Unknown" and "stale" in summary["reason"]
    assert envelope_summary(None, now=NOW, stale_after_s=90)["state"] == "Unknown"
    assert envelope_summary({"state": "Healthy"}, now=NOW, stale_after_s=90)["state"] == "Unknown"


def test_invalid_spec_names_the_field_and_says_what_to_do() -> None:
    issue = Issue("spec.routing.entry", "node 'mian' not found; did you mean 'main'?")
    _, conds = observe(spec_issues=[issue], **healthy_cluster())
    status, reason, message = conds["Validated"]
    assert (status, reason) == ("False", "InvalidSpec")
    assert "spec.routing.entry" in message and "apply it again" in message
    assert conds["Ready"][:2] == ("False", "InvalidSpec")


def test_privacy_errors_make_the_graph_non_compliant_and_dryrun_does_not_block() -> None:
    error = Issue("spec.modules[1]", "not cleared for phi", Severity.ERROR, "privacy")
    _, conds = observe(privacy_issues=[error], **healthy_cluster())
    assert conds["Compliant"][:2] == ("False", "NonCompliant")
    assert conds["Ready"][0] == "False"
    warning = Issue("spec.modules[1]", "not cleared for phi", Severity.WARNING, "privacy")
    _, conds = observe(privacy_issues=[warning], **healthy_cluster())
    assert conds["Compliant"][:2] == ("False", "DryRunViolations")
    assert conds["Ready"][0] == "True"


def test_missing_gate_is_reported_on_its_field() -> None:
    _, conds = observe(missing_gates=["phi"], **healthy_cluster())
    assert conds["Compliant"][:2] == ("Unknown", "GateMissing")


def test_no_deployments_yet_is_pending_not_failed() -> None:
    _, conds = observe(deployments=[], pods=[])
    assert conds["Scheduled"][:2] == ("Unknown", "Pending")
    assert conds["RouterReady"][:2] == ("False", "RouterNotCreated")
    assert "Deployment not created yet" in conds["ModulesReady"][2]


def test_router_envelopes_answer_is_parsed_per_module() -> None:
    payload = {
        "graph": "g",
        "modules": {
            "emb": {"envelope": envelope(), "source": "header", "error": None},
            "clf": {"envelope": None, "source": None, "error": "connection refused"},
            "odd": "garbage",
        },
    }
    parsed = parse_envelopes(payload)
    assert parsed is not None
    assert parsed["emb"] is not None and parsed["emb"]["state"] == "Healthy"
    assert parsed["clf"] is None and parsed["odd"] is None
    assert parse_envelopes({"modules": []}) is None
    assert parse_envelopes("nope") is None
