"""Where a module's pods may run, and how strictly its sidecar guards it.

Data residency is tied to placement here: a module's ``region`` and the ``allowedRegions`` of
every tag it is cleared for become one required node-affinity requirement (the intersection),
ANDed into each of the user's own node-selector terms rather than replacing them.

Only gates in ``enforce`` mode constrain placement. A ``dryrun`` gate observes, so its regions
become a *preferred* term: trying a gate out must never make a running graph unschedulable.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

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
    "sidecar_mode",
    "tolerations",
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
