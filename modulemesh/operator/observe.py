"""From what the cluster shows to the graph's status: per-module state and conditions.

Pure: it reads Deployments, Pods and envelopes as plain dicts (the API's JSON) and returns the
status document, so every rule is unit-tested without a cluster. ``Ready`` follows only what
the platform controls (validity, compliance, scheduling, replicas); health envelopes feed
``Degraded`` and the per-module summary, so a noisy or unreachable envelope never flaps Ready.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modulemesh.api import Issue, ModuleGraph, Severity
from modulemesh.operator.conditions import ConditionUpdate
from modulemesh.operator.naming import COMPONENT_LABEL, MODULE_LABEL
from modulemesh.operator.placement import pod_requests, unschedulable_advice
from modulemesh.operator.rollout_status import ROLLOUT_KEY, rollout_status

MAX_LISTED = 3
"""How many problems a condition message lists before it says how many more there are."""
CPU_PROVIDER = "CPUExecutionProvider"
GPU_FALLBACK_REASON = "GPUFallbackToCPU"
"""``Degraded`` reason when a module given GPUs serves on onnxruntime's CPU provider."""


@dataclass
class Observation:
    """Everything a status is computed from."""

    graph: ModuleGraph
    spec_issues: Sequence[Issue] = ()
    privacy_issues: Sequence[Issue] = ()
    missing_gates: Sequence[str] = ()
    deployments: Sequence[Mapping[str, Any]] = ()
    pods: Sequence[Mapping[str, Any]] = ()
    envelopes: Mapping[str, Mapping[str, Any] | None] | None = None
    """Module -> envelope JSON from the router's /envelopes; None when it could not be read."""
    envelope_error: str | None = None
    gpu_resource: str = "nvidia.com/gpu"
    endpoint: str | None = None
    envelope_stale_after_s: float = 90.0
    nodes: Sequence[Mapping[str, Any]] | None = None
    """The cluster's nodes (for what would fit an unschedulable pod); None when not read."""
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


def _listing(items: Sequence[str]) -> str:
    shown = "; ".join(items[:MAX_LISTED])
    more = len(items) - MAX_LISTED
    return shown + (f" (and {more} more)" if more > 0 else "")


def _label(obj: Mapping[str, Any], key: str) -> str | None:
    labels = obj.get("metadata", {}).get("labels") or {}
    value = labels.get(key)
    return str(value) if value is not None else None


def _module_deployments(obs: Observation) -> dict[str, Mapping[str, Any]]:
    return {
        module: d
        for d in obs.deployments
        if _label(d, COMPONENT_LABEL) == "module"
        and (module := _label(d, MODULE_LABEL)) is not None
    }


def _router_deployment(obs: Observation) -> Mapping[str, Any] | None:
    return next((d for d in obs.deployments if _label(d, COMPONENT_LABEL) == "router"), None)


def _ready_replicas(deployment: Mapping[str, Any] | None) -> int:
    if deployment is None:
        return 0
    return int((deployment.get("status") or {}).get("readyReplicas") or 0)


def unschedulable_reason(pod: Mapping[str, Any]) -> str | None:
    """The scheduler's message for a pod it could not place, e.g. ``Insufficient nvidia.com/gpu``."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return str(condition.get("message") or "Unschedulable")
    return None


def _timestamp(envelope: Mapping[str, Any]) -> datetime | None:
    value = envelope.get("timestamp")
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(float(value), UTC)
    return None


def envelope_summary(
    envelope: Mapping[str, Any] | None, *, now: datetime, stale_after_s: float
) -> dict[str, Any]:
    """The status form of one envelope; missing or stale envelopes are ``Unknown``."""
    if not envelope:
        return {"state": "Unknown", "reason": "no envelope received"}
    stamp = _timestamp(envelope)
    if stamp is None:
        return {"state": "Unknown", "reason": "envelope has no timestamp"}
    age = (now - stamp).total_seconds()
    updated = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    if age > stale_after_s:
        return {
            "state": "Unknown",
            "reason": f"envelope is stale ({age:.0f}s old)",
            "updated": updated,
        }
    latency = envelope.get("latency") or {}
    p99 = latency.get("p99") if isinstance(latency, Mapping) else None
    summary: dict[str, Any] = {
        "state": envelope.get("state") if envelope.get("state") in _STATES else "Unknown",
        "reason": str(envelope.get("reason") or ""),
        "requestRate": _number(envelope.get("requestRate")),
        "p99Ms": _number(p99 * 1000.0) if isinstance(p99, int | float) else None,
        "errorRate": _number(envelope.get("errorRate")),
        "confidence": _number(envelope.get("confidence")),
        "updated": updated,
    }
    return {k: v for k, v in summary.items() if v is not None}


_STATES = ("Healthy", "Degraded", "Unhealthy", "Unknown")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return round(float(value), 6)


def parse_envelopes(payload: Any) -> dict[str, dict[str, Any] | None] | None:
    """``module -> envelope JSON`` from the router's ``GET /envelopes`` answer, or None.

    Each module entry is ``{"envelope": {...}, "source", "ageSeconds", "error", "breaker"}``
    (docs/architecture.md); an entry without a usable envelope maps to None (Unknown).
    """
    if not isinstance(payload, Mapping):
        return None
    modules = payload.get("modules")
    if not isinstance(modules, Mapping):
        return None
    parsed: dict[str, dict[str, Any] | None] = {}
    for name, entry in modules.items():
        envelope = entry.get("envelope") if isinstance(entry, Mapping) else None
        module = dict(envelope) if isinstance(envelope, Mapping) else None
        rollout = entry.get(ROLLOUT_KEY) if isinstance(entry, Mapping) else None
        if module is not None and isinstance(rollout, Mapping):
            module[ROLLOUT_KEY] = dict(rollout)  # a rollout the router walks for it
        parsed[str(name)] = module
    return parsed


def compute_status(obs: Observation) -> tuple[dict[str, Any], list[ConditionUpdate]]:
    """The status fields (without conditions) and the condition updates for one graph."""
    spec = obs.graph.spec
    deployments = _module_deployments(obs)
    pods_by_module: dict[str, list[Mapping[str, Any]]] = {}
    for pod in obs.pods:
        owner = _label(pod, MODULE_LABEL)
        if _label(pod, COMPONENT_LABEL) == "module" and owner is not None:
            pods_by_module.setdefault(owner, []).append(pod)
    router_pods = [p for p in obs.pods if _label(p, COMPONENT_LABEL) == "router"]

    modules: list[dict[str, Any]] = []
    not_ready: list[str] = []
    unschedulable: list[str] = []
    degraded: list[str] = []
    on_cpu: list[str] = []
    unknown_envelopes = 0
    total_gpus = 0
    for module in spec.modules:
        deployment = deployments.get(module.name)
        desired = module.replicas
        ready = _ready_replicas(deployment)
        gpus = module.resources.gpu * desired
        total_gpus += gpus
        entry: dict[str, Any] = {
            "name": module.name,
            "desiredReplicas": desired,
            "readyReplicas": ready,
            "gpus": gpus,
        }
        stuck = [
            (p, r) for p in pods_by_module.get(module.name, []) if (r := unschedulable_reason(p))
        ]
        reasons = sorted({r for _, r in stuck})
        if reasons:
            entry["unschedulable"] = "; ".join(reasons)
            pod, reason = min(stuck, key=lambda pr: pr[1])
            advice = unschedulable_advice(
                reason, pod_requests(pod), obs.nodes, gpu_resources=(obs.gpu_resource,)
            )
            unschedulable.append(f"module {module.name}: {advice}")
        if deployment is None:
            not_ready.append(f"{module.name} (Deployment not created yet)")
        elif ready < desired:
            not_ready.append(f"{module.name} ({ready}/{desired} replicas ready)")
        if obs.envelopes is not None:
            envelope = obs.envelopes.get(module.name)
            summary = envelope_summary(
                envelope, now=obs.now, stale_after_s=obs.envelope_stale_after_s
            )
            entry["envelope"] = summary
            if envelope and (rollout := rollout_status(envelope.get(ROLLOUT_KEY))) is not None:
                entry["rollout"] = rollout
            if envelope and envelope.get("provider"):
                entry["provider"] = str(envelope["provider"])
            if summary["state"] in ("Degraded", "Unhealthy"):
                why = f": {summary['reason']}" if summary.get("reason") else ""
                degraded.append(f"{module.name} is {summary['state']}{why}")
            elif summary["state"] == "Unknown":
                unknown_envelopes += 1
            if (
                module.resources.gpu > 0
                and summary["state"] != "Unknown"
                and entry.get("provider") == CPU_PROVIDER
            ):
                on_cpu.append(
                    f"{module.name} has resources.gpu {module.resources.gpu} but serves on "
                    f"{CPU_PROVIDER} (no usable CUDA on its node or in its runtime image; "
                    "cpuFallback: Refuse keeps it out of service instead)"
                )
        else:
            entry["envelope"] = {
                "state": "Unknown",
                "reason": obs.envelope_error or "router envelopes not read yet",
            }
            unknown_envelopes += 1
        modules.append(entry)

    ready_count = len(spec.modules) - len(not_ready)
    status: dict[str, Any] = {
        "modules": modules,
        "modulesReady": f"{ready_count}/{len(spec.modules)}",
        "gpus": total_gpus,
    }
    if obs.endpoint:
        status["endpoint"] = obs.endpoint

    updates = [
        _validated(obs),
        _compliant(obs),
        _scheduled(
            unschedulable,
            deployments,
            pods_by_module,
            router_pods,
            spec_modules=len(spec.modules),
            nodes=obs.nodes,
        ),
        _modules_ready(not_ready, len(spec.modules)),
        _router_ready(_router_deployment(obs), spec.router.replicas),
        _degraded(degraded, on_cpu, unknown_envelopes, len(spec.modules), obs.envelope_error),
    ]
    updates.insert(0, _ready(updates))
    return status, updates


def _validated(obs: Observation) -> ConditionUpdate:
    errors = [i for i in obs.spec_issues if i.severity is Severity.ERROR]
    if errors:
        return ConditionUpdate(
            "Validated",
            "False",
            "InvalidSpec",
            f"{_listing([f'{i.path}: {i.message}' for i in errors])}. "
            "Fix the spec and apply it again; the last valid generation keeps running.",
        )
    warnings = [i for i in obs.spec_issues if i.severity is Severity.WARNING]
    message = "spec is valid"
    if warnings:
        message += f"; warnings: {_listing([f'{i.path}: {i.message}' for i in warnings])}"
    return ConditionUpdate("Validated", "True", "Valid", message)


def _compliant(obs: Observation) -> ConditionUpdate:
    if obs.missing_gates:
        return ConditionUpdate(
            "Compliant",
            "Unknown",
            "GateMissing",
            f"PrivacyGate(s) {', '.join(sorted(obs.missing_gates))} not found; "
            "create them or remove them from spec.gates",
        )
    errors = [i for i in obs.privacy_issues if i.severity is Severity.ERROR]
    warnings = [i for i in obs.privacy_issues if i.severity is Severity.WARNING]
    if errors:
        return ConditionUpdate(
            "Compliant",
            "False",
            "NonCompliant",
            f"{_listing([f'{i.path}: {i.message}' for i in errors])}. "
            "Clear the module for the tag, declare a cleared fallback, or move it to an allowed region.",
        )
    if warnings:
        return ConditionUpdate(
            "Compliant",
            "False",
            "DryRunViolations",
            f"dry-run gate(s) would deny: {_listing([f'{i.path}: {i.message}' for i in warnings])}",
        )
    gates = obs.graph.spec.gates
    message = (
        f"every path is cleared under gate(s) {', '.join(gates)}" if gates else "no gates apply"
    )
    return ConditionUpdate("Compliant", "True", "Compliant", message)


def _scheduled(
    unschedulable: list[str],
    deployments: Mapping[str, Mapping[str, Any]],
    pods_by_module: Mapping[str, Sequence[Mapping[str, Any]]],
    router_pods: Sequence[Mapping[str, Any]],
    *,
    spec_modules: int,
    nodes: Sequence[Mapping[str, Any]] | None = None,
) -> ConditionUpdate:
    router_reasons = sorted(
        {unschedulable_advice(r, pod_requests(p), nodes) for p in router_pods
         if (r := unschedulable_reason(p))}
    )  # fmt: skip
    problems = unschedulable + [f"router: {r}" for r in router_reasons]
    if problems:
        # Each problem says what would fit (placement.unschedulable_advice).
        return ConditionUpdate("Scheduled", "False", "Unschedulable", f"{_listing(problems)}.")
    if not deployments and spec_modules:
        return ConditionUpdate(
            "Scheduled", "Unknown", "Pending", "module Deployments not created yet"
        )
    if not any(pods_by_module.values()):
        return ConditionUpdate("Scheduled", "Unknown", "Pending", "no module pods yet")
    return ConditionUpdate("Scheduled", "True", "Scheduled", "every pod is placed on a node")


def _modules_ready(not_ready: list[str], total: int) -> ConditionUpdate:
    if not_ready:
        return ConditionUpdate(
            "ModulesReady",
            "False",
            "ModulesNotReady",
            f"{total - len(not_ready)}/{total} modules ready; waiting for {_listing(not_ready)}",
        )
    return ConditionUpdate("ModulesReady", "True", "ModulesReady", f"{total}/{total} modules ready")


def _router_ready(router: Mapping[str, Any] | None, desired: int) -> ConditionUpdate:
    if router is None:
        return ConditionUpdate(
            "RouterReady", "False", "RouterNotCreated", "router Deployment not created yet"
        )
    ready = _ready_replicas(router)
    if desired == 0:
        return ConditionUpdate(
            "RouterReady", "False", "RouterScaledToZero", "spec.router.replicas is 0"
        )
    if ready < 1:
        return ConditionUpdate(
            "RouterReady", "False", "RouterNotReady", f"router has {ready}/{desired} replicas ready"
        )
    return ConditionUpdate(
        "RouterReady", "True", "RouterReady", f"router has {ready}/{desired} replicas ready"
    )


def _degraded(
    degraded: list[str], on_cpu: list[str], unknown: int, total: int, envelope_error: str | None
) -> ConditionUpdate:
    """True when an envelope says Degraded or Unhealthy (``ModuleDegraded``) or a GPU module
    fell back to the CPU provider (``GPUFallbackToCPU``, when that is all): both serve, slower
    or worse than asked, so neither blocks Ready."""
    if degraded or on_cpu:
        return ConditionUpdate(
            "Degraded",
            "True",
            "ModuleDegraded" if degraded else GPU_FALLBACK_REASON,
            f"{_listing(degraded + on_cpu)}; see status.modules[]",
        )
    if total and unknown == total:
        why = envelope_error or "no module has reported a fresh envelope"
        return ConditionUpdate("Degraded", "Unknown", "EnvelopesUnknown", why)
    message = "every reporting module is Healthy"
    if unknown:
        message += f" ({unknown} without a fresh envelope)"
    return ConditionUpdate("Degraded", "False", "Healthy", message)


_READY_INPUTS = ("Validated", "Compliant", "Scheduled", "ModulesReady", "RouterReady")


def _ready(updates: Sequence[ConditionUpdate]) -> ConditionUpdate:
    """Ready is True when the graph is valid, compliant, placed and every part is ready."""
    by_type = {u.type: u for u in updates}
    for type_ in _READY_INPUTS:
        update = by_type[type_]
        blocking = update.status != "True"
        if type_ == "Compliant" and update.reason == "DryRunViolations":
            blocking = False
        if blocking:
            return ConditionUpdate("Ready", "False", update.reason, f"{type_}: {update.message}")
    return ConditionUpdate("Ready", "True", "GraphReady", "graph is serving")
