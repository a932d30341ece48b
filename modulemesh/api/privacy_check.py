"""The static privacy check: can a request tagged T reach a module that may not see it?

For every tag of every gate the graph names, walk every path a request can take from the
entry (all node kinds: steps, cases and default, split arms and mirror, cascade and select
candidates, validate generator/validator/corrector/fallback). Each module on the way must be
*compliant* for the tag, or have a compliant module along its ``fallback`` chain (the router
falls back to it for tagged requests). Compliant means: the tag is in the module's
``clearance`` and, when the tag sets ``allowedRegions``, the module runs in one of them: its
``region`` is one of them, or it sets no region and an enforcing gate pins it there (render
turns an enforcing gate's allowed regions into required node affinity; a dry-run gate only
into a preferred one, so there an unpinned module may land anywhere and is reported).
A violation is an error when the gate enforces and a warning in dry-run.

Placement is checked too: a module's pods must run where its own ``region`` and the
``allowedRegions`` of every tag it is cleared for (in enforcing gates) all agree; when no
region does, its pods could never be scheduled, which is an error naming the constraints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from modulemesh.api.errors import Issue, Severity
from modulemesh.api.gate import GateMode, GateTag, PrivacyGate
from modulemesh.api.graph import Module, ModuleGraphSpec, Node
from modulemesh.api.targets import node_targets


def compliance_problem(module: Module, tag: GateTag, *, pinned: bool = True) -> str | None:
    """Why ``module`` may not receive requests tagged ``tag``; None when it may.

    ``pinned``: whether the gate's allowed regions become required node affinity (enforce).
    """
    if tag.name not in module.clearance:
        cleared = ", ".join(module.clearance) or "nothing"
        return f"is not cleared for tag {tag.name!r} (its clearance: {cleared})"
    if tag.allowed_regions is not None and module.region not in tag.allowed_regions:
        if module.region is None and pinned and tag.allowed_regions:
            return None  # placed by node affinity into an allowed region
        where = f"runs in region {module.region!r}" if module.region else "sets no region"
        return (
            f"{where}, but tag {tag.name!r} may only be processed in "
            f"{', '.join(tag.allowed_regions) or 'no region'}"
        )
    return None


def compliant_in_chain(
    module: Module, tag: GateTag, modules: Mapping[str, Module], *, pinned: bool = True
) -> bool:
    """Whether ``module`` or a module on its fallback chain may receive ``tag``."""
    seen: set[str] = set()
    current: Module | None = module
    while current is not None and current.name not in seen:
        if compliance_problem(current, tag, pinned=pinned) is None:
            return True
        seen.add(current.name)
        current = modules.get(current.fallback) if current.fallback else None
    return False


def region_constraints(
    module: Module, gates: Iterable[PrivacyGate], mode: GateMode = GateMode.ENFORCE
) -> list[tuple[str, frozenset[str]]]:
    """``(what, regions)`` for each tag the module is cleared for that limits its regions in
    gates of ``mode``: the allowedRegions placement turns into node affinity."""
    cleared = set(module.clearance)
    return [
        (f"tag {tag.name!r} (PrivacyGate {gate.metadata.name!r})", frozenset(tag.allowed_regions))
        for gate in gates
        if gate.spec.mode is mode
        for tag in gate.spec.tags
        if tag.name in cleared and tag.allowed_regions is not None
    ]


def required_regions(module: Module, gates: Iterable[PrivacyGate]) -> frozenset[str] | None:
    """Where the module's pods must run: its ``region`` intersected with every enforcing
    constraint; None when nothing constrains it (empty when nothing can satisfy it)."""
    sets = [regions for _, regions in region_constraints(module, gates)]
    if module.region is not None:
        sets.insert(0, frozenset({module.region}))
    return frozenset.intersection(*sets) if sets else None


def check_placement(spec: ModuleGraphSpec, gates: Mapping[str, PrivacyGate]) -> list[Issue]:
    """Modules whose region constraints leave no region: their pods could never schedule."""
    named = [gates[name] for name in dict.fromkeys(spec.gates) if name in gates]
    issues: list[Issue] = []
    for index, module in enumerate(spec.modules):
        if required_regions(module, named) != frozenset():
            continue
        constraints = [
            *([f"its region {module.region!r}"] if module.region is not None else []),
            *(
                f"{what} allows {', '.join(sorted(regions)) or 'no region'}"
                for what, regions in region_constraints(module, named)
            ),
        ]
        issues.append(
            Issue(
                f"spec.modules[{index}]",
                f"no region satisfies module {module.name!r}: {'; '.join(constraints)}. Its "
                "pods could never be scheduled; change its region or clearance, or split it "
                "into one module per region",
                rule="privacy",
            )
        )
    return issues


def check_privacy(spec: ModuleGraphSpec, gates: Mapping[str, PrivacyGate]) -> list[Issue]:
    """Every module a tagged request can reach without a compliant module to fall back on."""
    modules: dict[str, Module] = {}
    for m in spec.modules:
        modules.setdefault(m.name, m)
    nodes: dict[str, tuple[int, Node]] = {}
    for index, node in enumerate(spec.routing.nodes):
        nodes.setdefault(node.name, (index, node))
    issues: list[Issue] = []
    for gate_name in dict.fromkeys(spec.gates):
        gate = gates.get(gate_name)
        if gate is None:
            continue  # reported as a missing gate by validation
        severity = Severity.ERROR if gate.spec.mode is GateMode.ENFORCE else Severity.WARNING
        for tag in gate.spec.tags:
            issues += _walk(spec, modules, nodes, gate_name, gate.spec.mode, tag, severity)
    return issues


def _walk(
    spec: ModuleGraphSpec,
    modules: Mapping[str, Module],
    nodes: Mapping[str, tuple[int, Node]],
    gate_name: str,
    mode: GateMode,
    tag: GateTag,
    severity: Severity,
) -> list[Issue]:
    """Depth-first over nodes from the entry; each node is visited once per tag."""
    issues: list[Issue] = []
    visited: set[str] = set()
    stack: list[tuple[str, tuple[str, ...]]] = [(spec.routing.entry, ())]
    module_index = {m.name: i for i, m in reversed(list(enumerate(spec.modules)))}
    while stack:
        name, trail = stack.pop()
        if name in visited or name not in nodes:
            continue
        visited.add(name)
        index, node = nodes[name]
        for ref in reversed(list(node_targets(node))):
            hop = (*trail, f"{name}.{ref.field}")
            if ref.target.node is not None:
                stack.append((ref.target.node, hop))
                continue
            module = modules.get(str(ref.target.module))
            pinned = mode is GateMode.ENFORCE
            if module is None or compliant_in_chain(module, tag, modules, pinned=pinned):
                continue
            problem = compliance_problem(module, tag, pinned=pinned)
            fallbacks = _fallback_names(module, modules)
            fix = (
                f"its fallbacks ({', '.join(fallbacks)}) are not compliant either"
                if fallbacks
                else "it has no fallback"
            )
            at = f"spec.modules[{module_index[module.name]}]"
            issues.append(
                Issue(
                    f"spec.routing.nodes[{index}].{ref.field}.module",
                    f"non-compliant: module {module.name!r} {problem}, and {fix}; "
                    f"PrivacyGate {gate_name!r} ({mode.value}) lets requests tagged "
                    f"{tag.name!r} reach it via {' -> '.join(hop)}. "
                    f"Clear the module for {tag.name!r} in an allowed region ({at}) "
                    "or give it a fallback that is",
                    severity,
                    rule="privacy",
                )
            )
    return issues


def _fallback_names(module: Module, modules: Mapping[str, Module]) -> list[str]:
    """Names along ``module``'s fallback chain (existing modules only, no repeats)."""
    names: list[str] = []
    current = modules.get(module.fallback) if module.fallback else None
    while current is not None and current.name not in names and current.name != module.name:
        names.append(current.name)
        current = modules.get(current.fallback) if current.fallback else None
    return names
