"""Where a module's pods may run, and how strictly its sidecar guards it.

Data residency is tied to placement here: a module's ``region`` and the ``allowedRegions`` of
every tag it is cleared for become one required node-affinity requirement (the intersection),
ANDed into each of the user's own node-selector terms rather than replacing them.

Only gates in ``enforce`` mode constrain placement. A ``dryrun`` gate observes, so its regions
become a *preferred* term: trying a gate out must never make a running graph unschedulable.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils import parse_quantity

from modulemesh.api.gate import GateMode, PrivacyGate
from modulemesh.api.graph import Module, ModuleGraph
from modulemesh.api.privacy_check import region_constraints, required_regions
from modulemesh.operator.settings import RenderSettings

__all__ = [
    "NO_ALLOWED_REGION",
    "gates_of",
    "gpu_resource",
    "node_affinity_regions",
    "node_selector",
    "pod_affinity",
    "pod_requests",
    "sidecar_mode",
    "tolerations",
    "unschedulable_advice",
]

NO_ALLOWED_REGION = "modulemesh.io/no-allowed-region"
"""Region value no node has: used when the required regions do not intersect.

Validation refuses such a graph (``check_placement``); if render is handed one anyway it fails
closed (pods stay Pending) instead of crashing or placing tagged data in a region no gate allows.
"""


def gates_of(graph: ModuleGraph, gates: Sequence[PrivacyGate]) -> list[PrivacyGate]:
    """The gates the graph names, in the graph's order; unknown names are skipped."""
    by_name = {g.metadata.name: g for g in gates}
    return [by_name[name] for name in graph.spec.gates if name in by_name]


def node_affinity_regions(
    module: Module, gates: Sequence[PrivacyGate]
) -> tuple[list[str] | None, list[str] | None]:
    """``(required, preferred)`` region lists, sorted; ``None`` where nothing constrains.

    Required: the module's region intersected with every enforce-mode tag's allowed regions.
    Preferred: the same with dryrun gates added, when it differs from the required set and
    is not empty.
    """
    required = required_regions(module, gates)
    dry = [regions for _, regions in region_constraints(module, gates, GateMode.DRYRUN)]
    preferred: frozenset[str] | None = None
    if dry:
        preferred = frozenset.intersection(*dry, *([required] if required is not None else []))
        if not preferred or preferred == required:
            preferred = None
    return (
        None if required is None else (sorted(required) or [NO_ALLOWED_REGION]),
        None if preferred is None else sorted(preferred),
    )


def _region_requirement(label: str, regions: list[str]) -> dict[str, Any]:
    return {"key": label, "operator": "In", "values": regions}


def pod_affinity(
    module: Module, gates: Sequence[PrivacyGate], settings: RenderSettings
) -> dict[str, Any] | None:
    """The module's ``affinity``: the user's, with the region requirements merged in."""
    required, preferred = node_affinity_regions(module, gates)
    affinity: dict[str, Any] = copy.deepcopy(module.affinity) if module.affinity else {}
    if required is None and preferred is None:
        return affinity or None
    node: dict[str, Any] = affinity.setdefault("nodeAffinity", {})
    if required is not None:
        requirement = _region_requirement(settings.region_label, required)
        block = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
        terms: list[dict[str, Any]] = block.get("nodeSelectorTerms") or [{}]
        # Terms are ORed: the region must hold in every one of them, so AND it into each.
        for term in terms:
            term["matchExpressions"] = [*term.get("matchExpressions", []), requirement]
        block["nodeSelectorTerms"] = terms
    if preferred is not None:
        node["preferredDuringSchedulingIgnoredDuringExecution"] = [
            *node.get("preferredDuringSchedulingIgnoredDuringExecution", []),
            {
                "weight": 100,
                "preference": {
                    "matchExpressions": [_region_requirement(settings.region_label, preferred)]
                },
            },
        ]
    return affinity


def gpu_resource(module: Module, settings: RenderSettings) -> str:
    """The extended resource a module's GPUs are requested as."""
    return module.resources.gpu_resource or settings.gpu_resource


def node_selector(module: Module, settings: RenderSettings) -> dict[str, str] | None:
    """The user's nodeSelector plus the GPU product when ``gpuType`` is set (which wins)."""
    chosen = dict(module.node_selector or {})
    if module.resources.gpu > 0 and module.resources.gpu_type:
        chosen[settings.gpu_product_label] = module.resources.gpu_type
    return dict(sorted(chosen.items())) or None


def tolerations(module: Module, settings: RenderSettings) -> list[dict[str, Any]] | None:
    """The user's tolerations plus the GPU toleration for GPU modules (not duplicated)."""
    chosen = [dict(t) for t in module.tolerations or []]
    if module.resources.gpu > 0:
        gpu = {"key": settings.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"}
        if gpu not in chosen:
            chosen.append(gpu)
    return chosen or None


def sidecar_mode(module: Module, gates: Sequence[PrivacyGate]) -> str:
    """``dryrun`` only if every gate that could make this sidecar deny is in dryrun.

    The sidecar denies a request carrying a tag outside the module's clearance. The gates
    that own such denials are those defining a tag this module is *not* cleared for; the
    sidecar has one mode, so it relaxes to dryrun only when all of them are dryrun. With no
    such gate (no gates, or cleared for every gated tag) it enforces: an uncleared tag no gate
    defines has nobody who asked for leniency, so the fail-safe answer is to deny.
    """
    cleared = set(module.clearance)
    owners = [g for g in gates if any(t.name not in cleared for t in g.spec.tags)]
    if owners and all(g.spec.mode is GateMode.DRYRUN for g in owners):
        return "dryrun"
    return "enforce"


# --- why a pod does not fit, and what would --------------------------------------------------

_FIELDS = {"cpu": "resources.cpu", "memory": "resources.memory"}


def _quantity(value: Any) -> Decimal | None:
    try:
        return Decimal(parse_quantity(value))  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, InvalidOperation):
        return None


def pod_requests(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """What one pod asks the scheduler for: its containers' requests summed (a limit stands
    for a missing request, as the API server defaults it; extended resources have only limits)."""
    total: dict[str, Decimal] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        asked = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name, value in asked.items():
            amount = _quantity(value)
            if amount is not None and amount > 0:
                total[str(name)] = total.get(str(name), Decimal(0)) + amount
    return total


def _show(resource: str, amount: Decimal) -> str:
    if resource == "memory":
        return f"{amount / (1 << 30):.3g}Gi"
    return f"{amount.normalize():f}"


def _resource_field(resource: str, gpu_resources: Sequence[str]) -> str:
    if resource in gpu_resources:
        return "resources.gpu"
    return _FIELDS.get(resource, resource)


def unschedulable_advice(
    scheduler_message: str,
    requests: Mapping[str, Decimal],
    nodes: Sequence[Mapping[str, Any]] | None,
    gpu_resources: Sequence[str] = ("nvidia.com/gpu",),
) -> str:
    """The scheduler's message (without its trailing period) and what would make the pod fit.

    With the nodes known: a pod larger than every node (``gpu: 8`` on 4-GPU nodes) can only
    fit if it asks for less, so that is said with the largest node's figure, never "add GPU
    nodes" of the same size; otherwise the resources the scheduler found short are named,
    GPU advice only when GPUs are short (a CPU-only module short of CPU is told about CPU).
    """
    said = scheduler_message.strip().rstrip(".").strip()
    found = re.findall(r"Insufficient ([\w./-]+)", scheduler_message)
    short = sorted({name.rstrip(".") for name in found})
    sizes = [
        {str(k): q for k, v in ((n.get("status") or {}).get("allocatable") or {}).items()
         if (q := _quantity(v)) is not None}
        for n in nodes or []
    ]  # fmt: skip
    if sizes and requests:
        too_big = [
            r for r, asked in sorted(requests.items())
            if asked > max(size.get(r, Decimal(0)) for size in sizes)
        ]  # fmt: skip
        if too_big:
            parts = []
            for resource in too_big:
                largest = max(size.get(resource, Decimal(0)) for size in sizes)
                field = _resource_field(resource, gpu_resources)
                parts.append(
                    f"each pod asks for {_show(resource, requests[resource])} {resource} and "
                    f"the largest node has {_show(resource, largest)}: lower {field} to at most "
                    f"{_show(resource, largest)}, or add nodes with at least "
                    f"{_show(resource, requests[resource])}"
                )
            return f"{said}. No node could ever fit it: {'; '.join(parts)}"
        if not any(
            all(size.get(r, Decimal(0)) >= q for r, q in requests.items()) for size in sizes
        ):
            asked = ", ".join(f"{_show(r, q)} {r}" for r, q in sorted(requests.items()))
            return (
                f"{said}. No single node has {asked} at once: lower the module's resources "
                "or add larger nodes"
            )
    advice: list[str] = []
    gpus_short = [r for r in short if r in gpu_resources]
    other_short = [r for r in short if r not in gpu_resources]
    if gpus_short:
        advice.append(
            f"free or add {', '.join(gpus_short)} capacity (GPU nodes in the allowed region)"
        )
    if other_short:
        fields = " / ".join(_resource_field(r, gpu_resources) for r in other_short)
        advice.append(f"add {' and '.join(other_short)} capacity or lower {fields}")
    if "affinity/selector" in scheduler_message or "node affinity" in scheduler_message:
        advice.append(
            "no node matches its placement (region, nodeSelector, gpuType): label nodes to "
            "match or change the module's placement"
        )
    if "untolerated taint" in scheduler_message:
        advice.append("nodes carry taints it does not tolerate: add tolerations or untaint")
    generic = not advice
    if generic:
        advice.append("add capacity or lower the module's resources")
    replicas = ", or lower its replicas" if short or generic else ""
    return f"{said}. To fit: {'; '.join(advice)}{replicas}"
