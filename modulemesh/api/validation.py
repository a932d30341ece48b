"""Semantic validation of ``ModuleGraph`` and ``PrivacyGate`` specs.

The models check each field on its own; this module checks what needs the whole graph:
unique names, references (with the closest name suggested), cycles, reachability, split
weights, CEL conditions, switch fall-through, GPU and batching bounds, timeouts, tensor
mapping between steps and the static privacy check (:mod:`modulemesh.api.privacy_check`).
Every problem is returned at once, each naming its field path and saying what to do.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from modulemesh.api.errors import Issue, Severity, errors_only
from modulemesh.api.gate import PrivacyGate
from modulemesh.api.graph import (
    GRAPH_NAME_PATTERN,
    CascadeNode,
    EnsembleNode,
    Exhausted,
    ModuleGraph,
    ModuleGraphSpec,
    Node,
    SelectNode,
    SequenceNode,
    SplitNode,
    Step,
    SwitchNode,
    ValidateNode,
)
from modulemesh.api.loader import Documents
from modulemesh.api.privacy_check import check_placement, check_privacy
from modulemesh.api.targets import node_targets
from modulemesh.cel import CelError, Environment, compile_condition
from modulemesh.headers import NOT_PROPAGATED

__all__ = [
    "DocumentReport",
    "document_reports",
    "validate_documents",
    "validate_gate",
    "validate_graph",
]

WARNING = Severity.WARNING


def validate_graph(
    graph: ModuleGraph, gates: Iterable[PrivacyGate] | Mapping[str, PrivacyGate] = ()
) -> list[Issue]:
    """Every semantic problem of ``graph`` given the gates available to it (by name)."""
    by_name = dict(gates) if isinstance(gates, Mapping) else {g.metadata.name: g for g in gates}
    spec = graph.spec
    issues: list[Issue] = []
    issues += _graph_name(graph.metadata.name)
    issues += _unique_names(spec)
    issues += _references(spec)
    issues += _gates(spec, by_name)
    issues += _node_cycles(spec)
    issues += _fallback_cycles(spec)
    issues += _reachability(spec)
    for index, node in enumerate(spec.routing.nodes):
        issues += _node_rules(spec, node, f"spec.routing.nodes[{index}]")
    issues += _module_rules(spec)
    issues += _policy_rules(spec)
    issues += check_privacy(spec, by_name)
    issues += check_placement(spec, by_name)
    return issues


def validate_gate(gate: PrivacyGate) -> list[Issue]:
    """Problems of one gate: duplicate tags, empty region lists."""
    issues: list[Issue] = []
    seen: dict[str, int] = {}
    for i, tag in enumerate(gate.spec.tags):
        path = f"spec.tags[{i}]"
        if tag.name in seen:
            issues.append(
                Issue(
                    f"{path}.name",
                    f"tag {tag.name!r} is already declared at spec.tags[{seen[tag.name]}]; "
                    "merge the two entries",
                )
            )
        seen.setdefault(tag.name, i)
        if tag.allowed_regions is not None and not tag.allowed_regions:
            issues.append(
                Issue(
                    f"{path}.allowedRegions",
                    f"an empty list means requests tagged {tag.name!r} may be processed "
                    "nowhere; list regions, or omit the field to allow any region",
                )
            )
    return issues


def validate_documents(docs: Documents) -> list[Issue]:
    """Loader issues plus the semantic issues of every graph and gate in ``docs``.

    Each semantic issue's path is prefixed with the file the document came from, as the
    loader does for schema problems. Graphs see the gates of their own namespace.
    """
    issues = list(docs.issues) + duplicate_documents(docs)
    for report in document_reports(docs):
        issues += report.issues
    return issues


@dataclass(frozen=True)
class DocumentReport:
    """The semantic issues of one loaded document (paths prefixed with its file)."""

    document: ModuleGraph | PrivacyGate
    issues: list[Issue]

    @property
    def ok(self) -> bool:
        """True when none of the issues is an error."""
        return not errors_only(self.issues)


def document_reports(docs: Documents) -> list[DocumentReport]:
    """One report per gate, then per graph, in the order they were loaded."""
    reports: list[DocumentReport] = []
    for gate in docs.gates:
        where = _where(docs, f"PrivacyGate/{gate.metadata.name}", docs.gates)
        reports.append(DocumentReport(gate, [_prefixed(i, where) for i in validate_gate(gate)]))
    for graph in docs.graphs:
        namespace = graph.metadata.namespace or "default"
        visible = {
            g.metadata.name: g
            for g in docs.gates
            if (g.metadata.namespace or "default") == namespace
        }
        where = _where(docs, f"ModuleGraph/{graph.metadata.name}", docs.graphs)
        issues = [_prefixed(i, where) for i in validate_graph(graph, visible)]
        reports.append(DocumentReport(graph, issues))
    return reports


# --- documents -----------------------------------------------------------------------------


def _where(
    docs: Documents, key: str, same_kind: Sequence[ModuleGraph] | Sequence[PrivacyGate]
) -> str:
    """``file`` or, when the file holds several of this kind, ``file (Kind/name)``."""
    source = docs.sources.get(key, "<input>")
    siblings = [d for d in same_kind if docs.sources.get(f"{d.kind}/{d.metadata.name}") == source]
    return f"{source} ({key})" if len(siblings) > 1 else source


def _prefixed(issue: Issue, where: str) -> Issue:
    return replace(issue, path=f"{where}: {issue.path}")


def duplicate_documents(docs: Documents) -> list[Issue]:
    """Two graphs (or gates) with the same namespace and name would overwrite each other."""
    issues: list[Issue] = []
    for kind, items in (("ModuleGraph", docs.graphs), ("PrivacyGate", docs.gates)):
        seen: set[tuple[str, str]] = set()
        for item in items:
            key = (item.metadata.namespace or "default", item.metadata.name)
            if key in seen:
                issues.append(
                    Issue(
                        f"{docs.sources.get(f'{kind}/{key[1]}', '<input>')}: metadata.name",
                        f"{kind} {key[1]!r} is defined more than once in namespace {key[0]!r}; "
                        "rename one of them",
                    )
                )
            seen.add(key)
    return issues


# --- names and references ------------------------------------------------------------------


def _graph_name(name: str) -> list[Issue]:
    if re.match(GRAPH_NAME_PATTERN, name):
        return []
    return [
        Issue(
            "metadata.name",
            f"graph name {name!r} becomes the start of Service names, which must be DNS-1035 "
            "labels: use lowercase letters, digits and '-', starting with a letter and ending "
            "with a letter or digit (no dots)",
        )
    ]


def _suggest(name: str, known: Iterable[str], what: str) -> str:
    """`` (did you mean 'x'?)`` or a list of the known names, for 'not found' messages."""
    names = sorted(set(known))
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    if not names:
        return f"; there are no {what}"
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    return f"; known {what}: {shown}"


def _duplicates(names: Sequence[str], path: str, what: str) -> list[Issue]:
    """An issue for every name already used earlier in ``names``."""
    first: dict[str, int] = {}
    issues: list[Issue] = []
    for i, name in enumerate(names):
        if name in first:
            issues.append(
                Issue(
                    f"{path}[{i}].name",
                    f"{what} name {name!r} is already used by {path}[{first[name]}]; "
                    f"{what} names must be unique",
                )
            )
        else:
            first[name] = i
    return issues


def _unique_names(spec: ModuleGraphSpec) -> list[Issue]:
    issues = _duplicates([m.name for m in spec.modules], "spec.modules", "module")
    issues += _duplicates([n.name for n in spec.routing.nodes], "spec.routing.nodes", "node")
    return issues


def _references(spec: ModuleGraphSpec) -> list[Issue]:
    """Every module, node and fallback reference names something that exists."""
    modules = {m.name for m in spec.modules}
    nodes = {n.name for n in spec.routing.nodes}
    issues: list[Issue] = []
    if spec.routing.entry not in nodes:
        issues.append(
            Issue(
                "spec.routing.entry",
                f"entry node {spec.routing.entry!r} does not exist"
                + _suggest(spec.routing.entry, nodes, "nodes"),
            )
        )
    for index, node in enumerate(spec.routing.nodes):
        for ref in node_targets(node):
            path = f"spec.routing.nodes[{index}].{ref.field}"
            module, target_node = ref.target.module, ref.target.node
            if module is not None and module not in modules:
                hint = (
                    f"; {module!r} is a node: write `node: {module}`"
                    if module in nodes
                    else _suggest(module, modules, "modules")
                )
                issues.append(Issue(f"{path}.module", f"module {module!r} does not exist{hint}"))
            if target_node is not None and target_node not in nodes:
                hint = (
                    f"; {target_node!r} is a module: write `module: {target_node}`"
                    if target_node in modules
                    else _suggest(target_node, nodes, "nodes")
                )
                issues.append(Issue(f"{path}.node", f"node {target_node!r} does not exist{hint}"))
    for index, m in enumerate(spec.modules):
        if m.fallback is not None and m.fallback not in modules:
            issues.append(
                Issue(
                    f"spec.modules[{index}].fallback",
                    f"fallback module {m.fallback!r} does not exist"
                    + _suggest(m.fallback, modules - {m.name}, "modules"),
                )
            )
    return issues


def _gates(spec: ModuleGraphSpec, gates: Mapping[str, PrivacyGate]) -> list[Issue]:
    """Every gate the graph names is supplied, and named once."""
    issues: list[Issue] = []
    seen: set[str] = set()
    for i, name in enumerate(spec.gates):
        if name in seen:
            issues.append(Issue(f"spec.gates[{i}]", f"gate {name!r} is listed twice", WARNING))
        seen.add(name)
        if name not in gates:
            issues.append(
                Issue(
                    f"spec.gates[{i}]",
                    f"PrivacyGate {name!r} was not found; apply it in the graph's namespace "
                    "(or pass its file to validate/render)" + _suggest(name, gates, "gates"),
                )
            )
    return issues


# --- graph shape ---------------------------------------------------------------------------


def _node_cycles(spec: ModuleGraphSpec) -> list[Issue]:
    """Node -> node references must not loop: a request would never finish."""
    edges: dict[str, list[tuple[str, str]]] = {}
    for index, node in enumerate(spec.routing.nodes):
        if node.name in edges:
            continue
        edges[node.name] = [
            (ref.target.node, f"spec.routing.nodes[{index}].{ref.field}.node")
            for ref in node_targets(node)
            if ref.target.node is not None
        ]
    issues: list[Issue] = []
    reported: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target, field in edges.get(name, []):
            if target not in edges:
                continue
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    issues.append(
                        Issue(
                            field,
                            f"node cycle {' -> '.join(cycle)}: a request would loop forever; "
                            "remove one of these node references",
                        )
                    )
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in edges:
        if name not in state:
            visit(name, [name])
    return issues


def _fallback_cycles(spec: ModuleGraphSpec) -> list[Issue]:
    """Fallback chains must end: ``a -> b -> a`` leaves nothing to fall back on."""
    fallbacks = {m.name: m.fallback for m in reversed(spec.modules)}
    issues: list[Issue] = []
    reported: set[frozenset[str]] = set()
    for index, m in enumerate(spec.modules):
        chain = [m.name]
        current = m.fallback
        while current is not None and current in fallbacks and current not in chain:
            chain.append(current)
            current = fallbacks[current]
        if current == m.name and frozenset(chain) not in reported:
            reported.add(frozenset(chain))
            issues.append(
                Issue(
                    f"spec.modules[{index}].fallback",
                    f"fallback cycle {' -> '.join([*chain, m.name])}: a module cannot fall back "
                    "to itself; end the chain at a module without a fallback",
                )
            )
    return issues


def _reachability(spec: ModuleGraphSpec) -> list[Issue]:
    """Nodes the entry never reaches, and modules nothing uses, are most likely mistakes."""
    nodes = {n.name: n for n in reversed(spec.routing.nodes)}
    if spec.routing.entry not in nodes:
        return []  # reported as a missing entry
    reached: set[str] = set()
    used_modules: set[str] = set()
    stack = [spec.routing.entry]
    while stack:
        name = stack.pop()
        if name in reached or name not in nodes:
            continue
        reached.add(name)
        for ref in node_targets(nodes[name]):
            if ref.target.node is not None:
                stack.append(ref.target.node)
            elif ref.target.module is not None:
                used_modules.add(ref.target.module)
    fallbacks = {m.name: m.fallback for m in spec.modules}
    frontier = list(used_modules)
    while frontier:
        fallback = fallbacks.get(frontier.pop())
        if fallback is not None and fallback not in used_modules:
            used_modules.add(fallback)
            frontier.append(fallback)
    issues = [
        Issue(
            f"spec.routing.nodes[{i}]",
            f"node {n.name!r} is not reachable from entry {spec.routing.entry!r}, so it never "
            "runs; reference it from a reachable node or remove it",
            WARNING,
        )
        for i, n in enumerate(spec.routing.nodes)
        if n.name not in reached
    ]
    issues += [
        Issue(
            f"spec.modules[{i}]",
            f"module {m.name!r} is deployed but no reachable node or fallback calls it; "
            "use it or remove it",
            WARNING,
        )
        for i, m in enumerate(spec.modules)
        if m.name not in used_modules
    ]
    return issues


# --- per node ------------------------------------------------------------------------------


def _node_rules(spec: ModuleGraphSpec, node: Node, path: str) -> list[Issue]:
    issues: list[Issue] = []
    if isinstance(node, SequenceNode):
        issues += _steps(node.steps, f"{path}.steps", sequential=True)
        issues += _sequence_outputs(node, path)
    elif isinstance(node, EnsembleNode):
        issues += _steps(node.steps, f"{path}.steps", sequential=False)
        if node.min_successes > len(node.steps):
            issues.append(
                Issue(
                    f"{path}.minSuccesses",
                    f"needs {node.min_successes} successful steps but the ensemble has only "
                    f"{len(node.steps)}; lower minSuccesses or add steps",
                )
            )
    elif isinstance(node, SwitchNode):
        issues += _switch(node, path)
    elif isinstance(node, SplitNode):
        issues += _split(node, path)
    elif isinstance(node, CascadeNode):
        issues += _steps(node.candidates, f"{path}.candidates", sequential=False)
        issues += _condition(node.escalate_when, Environment.ESCALATE, f"{path}.escalateWhen")
        issues += _cascade_order(spec, node, path)
    elif isinstance(node, SelectNode):
        issues += _steps(node.candidates, f"{path}.candidates", sequential=False)
    elif isinstance(node, ValidateNode):
        issues += _validate_node(node, path)
    return issues


def _condition(expression: str, environment: Environment, path: str) -> list[Issue]:
    try:
        compile_condition(expression, environment)
    except CelError as error:
        return [Issue(path, f"CEL condition {expression!r}: {error}")]
    return []


def _switch(node: SwitchNode, path: str) -> list[Issue]:
    issues: list[Issue] = []
    for i, case in enumerate(node.cases):
        issues += _condition(case.when, Environment.SWITCH, f"{path}.cases[{i}].when")
    if node.default is None and node.on_no_match is None:
        issues.append(
            Issue(
                path,
                f"switch {node.name!r} has no default and no onNoMatch: a request no case "
                "matches would have nowhere to go. Add `default:` with a target, or "
                "`onNoMatch: reject` to answer 422 naming the switch",
            )
        )
    elif node.default is not None and node.on_no_match is not None:
        issues.append(
            Issue(
                f"{path}.onNoMatch",
                "ignored: unmatched requests go to the default; remove one of them",
                WARNING,
            )
        )
    return issues


def _split(node: SplitNode, path: str) -> list[Issue]:
    total = sum(arm.weight for arm in node.targets)
    if total == 100:
        return []
    weights = " + ".join(str(arm.weight) for arm in node.targets)
    return [
        Issue(
            f"{path}.targets",
            f"weights sum to {total} ({weights}); they must sum to 100 (percent of traffic)",
        )
    ]


def _cascade_order(spec: ModuleGraphSpec, node: CascadeNode, path: str) -> list[Issue]:
    """A cascade tries candidates in order, so cheaper ones belong first."""
    issues: list[Issue] = []
    previous: tuple[int, float] | None = None
    for i, candidate in enumerate(node.candidates):
        module = spec.module(candidate.module) if candidate.module is not None else None
        if module is None:
            continue
        if previous is not None and module.cost < previous[1]:
            issues.append(
                Issue(
                    f"{path}.candidates[{i}]",
                    f"module {module.name!r} (cost {module.cost:g}) is cheaper than "
                    f"candidates[{previous[0]}] (cost {previous[1]:g}) but is tried after it; "
                    "order cascade candidates from cheapest to most expensive",
                    WARNING,
                )
            )
        previous = (i, module.cost)
    return issues


def _validate_node(node: ValidateNode, path: str) -> list[Issue]:
    issues = _condition(node.accept_when, Environment.ACCEPT, f"{path}.acceptWhen")
    roles: list[tuple[str, Step]] = [("generator", node.generator), ("validator", node.validator)]
    if node.corrector is not None:
        roles.append(("corrector", node.corrector))
    seen: dict[str, str] = {}
    for role, step in roles:
        name = step.step_name
        if name in seen:
            issues.append(
                Issue(
                    f"{path}.{role}.name",
                    f"step name {name!r} is already used by {seen[name]}; give the {role} "
                    "a distinct `name:` so mappings can tell them apart",
                )
            )
        seen.setdefault(name, role)
        issues += _reserved_step_name(step, f"{path}.{role}")
    # The validator sees the generated output; the corrector sees both.
    visible: list[str] = ["request"]
    for role, step in roles:
        issues += _step_inputs(step, f"{path}.{role}", visible, later=[], why="")
        visible.append(step.step_name)
    if node.fallback is not None and node.on_exhausted is not Exhausted.FALLBACK:
        issues.append(
            Issue(
                f"{path}.fallback",
                f"never used: onExhausted is {node.on_exhausted.value!r}; set "
                "`onExhausted: fallback` or remove the fallback",
                WARNING,
            )
        )
    return issues


def _reserved_step_name(step: Step, path: str) -> list[Issue]:
    if step.step_name != "request":
        return []
    return [
        Issue(
            f"{path}.name" if step.name is not None else path,
            "a step cannot be called 'request': mappings use `request.<input>` for the "
            "request's own tensors; set a different `name:`",
        )
    ]


def _steps(steps: Sequence[Step], path: str, *, sequential: bool) -> list[Issue]:
    """Unique step names, and tensor mappings that point at sources that exist in time."""
    issues: list[Issue] = []
    first: dict[str, int] = {}
    for i, step in enumerate(steps):
        name = step.step_name
        if name in first:
            issues.append(
                Issue(
                    f"{path}[{i}].name" if step.name is not None else f"{path}[{i}]",
                    f"step name {name!r} is already used by {path}[{first[name]}]; set a "
                    "distinct `name:` on one of them",
                )
            )
        first.setdefault(name, i)
        issues += _reserved_step_name(step, f"{path}[{i}]")
    names = [s.step_name for s in steps]
    for i, step in enumerate(steps):
        if sequential:
            issues += _step_inputs(
                step, f"{path}[{i}]", ["request", *names[:i]], later=names[i:], why="later"
            )
        else:
            issues += _step_inputs(step, f"{path}[{i}]", ["request"], later=names, why="parallel")
    return issues


def _step_inputs(
    step: Step, path: str, visible: Sequence[str], later: Sequence[str], why: str
) -> list[Issue]:
    """Each ``inputs`` value is ``<source>.<tensor>`` with a source this step can see."""
    issues: list[Issue] = []
    for key, ref in (step.inputs or {}).items():
        source = ref.split(".", 1)[0]
        if source in visible:
            continue
        field = f"{path}.inputs.{key}"
        if source in later and why == "later":
            message = (
                f"{ref!r} refers to step {source!r}, which has not run yet at this point; "
                "a step can only use `request` and earlier steps"
            )
        elif source in later:
            message = (
                f"{ref!r} refers to step {source!r}, but these steps are alternatives or run "
                "in parallel; map from `request.<input>` instead"
            )
        else:
            message = (
                f"{ref!r} refers to unknown source {source!r}"
                + _suggest(source, visible, "sources")
                + " (sources are `request` and the names of earlier steps)"
            )
        issues.append(Issue(field, message))
    return issues


def _sequence_outputs(node: SequenceNode, path: str) -> list[Issue]:
    names = ["request", *(s.step_name for s in node.steps)]
    issues: list[Issue] = []
    for key, ref in (node.outputs or {}).items():
        source = ref.split(".", 1)[0]
        if source not in names:
            issues.append(
                Issue(
                    f"{path}.outputs.{key}",
                    f"{ref!r} refers to unknown step {source!r}" + _suggest(source, names, "steps"),
                )
            )
    return issues


# --- modules and policy --------------------------------------------------------------------


def _module_rules(spec: ModuleGraphSpec) -> list[Issue]:
    issues: list[Issue] = []
    policy = spec.policy
    for i, m in enumerate(spec.modules):
        path = f"spec.modules[{i}]"
        gpu = m.resources.gpu
        if m.resources.gpu_type is not None and gpu == 0:
            issues.append(
                Issue(
                    f"{path}.resources.gpuType",
                    f"selects GPU type {m.resources.gpu_type!r} but the module asks for no "
                    "GPU; set resources.gpu to 1 or more, or remove gpuType",
                )
            )
        if m.resources.gpu_resource is not None and gpu == 0:
            issues.append(
                Issue(
                    f"{path}.resources.gpuResource",
                    "has no effect while resources.gpu is 0; set gpu or remove gpuResource",
                    WARNING,
                )
            )
        batching = m.batching
        if batching.max_queue < batching.max_batch_size:
            issues.append(
                Issue(
                    f"{path}.batching.maxQueue",
                    f"maxQueue ({batching.max_queue}) is smaller than maxBatchSize "
                    f"({batching.max_batch_size}), so a batch can never fill; raise maxQueue "
                    "to at least maxBatchSize",
                )
            )
        timeout = m.timeout_ms if m.timeout_ms is not None else policy.call_timeout_ms
        timeout_field = (
            f"{path}.timeoutMs" if m.timeout_ms is not None else "spec.policy.callTimeoutMs"
        )
        if batching.max_delay_ms >= timeout:
            issues.append(
                Issue(
                    f"{path}.batching.maxDelayMs",
                    f"maxDelayMs ({batching.max_delay_ms:g}) is not below the call timeout "
                    f"({timeout} ms, {timeout_field}): a request could time out while waiting "
                    "for its batch; lower maxDelayMs well below the timeout",
                )
            )
        elif batching.max_delay_ms * 2 > timeout:
            issues.append(
                Issue(
                    f"{path}.batching.maxDelayMs",
                    f"maxDelayMs ({batching.max_delay_ms:g}) is more than half the call timeout "
                    f"({timeout} ms, {timeout_field}), leaving little time to run the batch",
                    WARNING,
                )
            )
        if m.timeout_ms is not None and m.timeout_ms > policy.timeout_ms:
            issues.append(
                Issue(
                    f"{path}.timeoutMs",
                    f"{m.timeout_ms} ms exceeds the graph's request timeout "
                    f"(spec.policy.timeoutMs = {policy.timeout_ms}); the request deadline "
                    "cuts the call off first. Lower it or raise spec.policy.timeoutMs",
                    WARNING,
                )
            )
        health = m.health
        if health.degraded_error_rate > health.unhealthy_error_rate:
            issues.append(
                Issue(
                    f"{path}.health.degradedErrorRate",
                    f"{health.degraded_error_rate:g} is above unhealthyErrorRate "
                    f"({health.unhealthy_error_rate:g}); the module would be Unhealthy before "
                    "Degraded. Make degradedErrorRate the smaller one",
                )
            )
    return issues


def _policy_rules(spec: ModuleGraphSpec) -> list[Issue]:
    policy = spec.policy
    issues: list[Issue] = []
    if policy.call_timeout_ms > policy.timeout_ms:
        issues.append(
            Issue(
                "spec.policy.callTimeoutMs",
                f"{policy.call_timeout_ms} ms exceeds the request timeout "
                f"(spec.policy.timeoutMs = {policy.timeout_ms}); the request deadline always "
                "cuts calls off first. Lower callTimeoutMs",
                WARNING,
            )
        )
    breaker = policy.circuit_breaker
    if breaker.base_ejection_ms > breaker.max_ejection_ms:
        issues.append(
            Issue(
                "spec.policy.circuitBreaker.baseEjectionMs",
                f"{breaker.base_ejection_ms} ms is above maxEjectionMs "
                f"({breaker.max_ejection_ms}); make the base ejection the smaller one",
            )
        )
    seen: set[str] = set()
    for i, name in enumerate(policy.propagate_headers):
        if name in seen:
            issues.append(
                Issue(f"spec.policy.propagateHeaders[{i}]", f"{name!r} is listed twice", WARNING)
            )
        seen.add(name)
        if name in NOT_PROPAGATED or name.startswith("x-modulemesh-"):
            issues.append(
                Issue(
                    f"spec.policy.propagateHeaders[{i}]",
                    f"{name!r} cannot be propagated: the router sets it (or HTTP framing "
                    "does) on each module call; list only application headers such as "
                    "x-request-id",
                )
            )
    return issues
