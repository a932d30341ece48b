"""One reconcile of one ModuleGraph: validate, render, apply, prune, observe, report.

Blocking (the Kubernetes client is synchronous); the kopf handlers run it in a worker thread
under a per-graph lock. It returns what happened so the handlers can post Events.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from modulemesh.api import (
    GROUP_VERSION,
    Issue,
    ModuleGraph,
    PrivacyGate,
    Severity,
)
from modulemesh.api.errors import issues_from_pydantic
from modulemesh.api.validation import validate_graph
from modulemesh.operator import conditions, drift
from modulemesh.operator.cache import GATE_KIND, POD_KIND, Cache
from modulemesh.operator.conditions import ConditionUpdate
from modulemesh.operator.config import OperatorSettings
from modulemesh.operator.kube import (
    APPLY_ORDER,
    CHILD_KINDS,
    GATES,
    GRAPHS,
    NODES,
    POD,
    Kube,
    KubeError,
)
from modulemesh.operator.naming import graph_selector, short_name
from modulemesh.operator.observe import Observation, compute_status, unschedulable_reason
from modulemesh.operator.render import graph_endpoint, render
from modulemesh.operator.revisions import revision_history
from modulemesh.operator.rollout_status import rollout_column

log = logging.getLogger("modulemesh.operator")

PRIVACY_RULE = "privacy"
"""The ``Issue.rule`` of the static privacy check's findings."""


@dataclass
class Outcome:
    """What one reconcile did and found."""

    valid: bool
    applied: int = 0
    pruned: list[str] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    status_changed: bool = False
    transitions: list[tuple[str, str | None, str]] = field(default_factory=list)
    """``(condition, old status, new status)`` for every condition that changed."""


def is_privacy_issue(issue: Issue) -> bool:
    """Whether an issue comes from the static privacy check (reported as ``Compliant``)."""
    return issue.rule == PRIVACY_RULE


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """The controller reference that makes a child garbage-collected with its graph."""
    meta = body["metadata"]
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "ModuleGraph",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


class Reconciler:
    """Reconciles graphs against one cluster with one configuration."""

    def __init__(self, kube: Kube, settings: OperatorSettings, cache: Cache | None = None) -> None:
        self.kube = kube
        self.settings = settings
        self.render_settings = settings.render
        self.cache = cache
        """Read instead of the API once primed (the operator's watches keep it current)."""

    def _cached(self, *kinds: str) -> Cache | None:
        return self.cache if self.cache is not None and self.cache.ready(*kinds) else None

    def _owned(self, namespace: str, graph: str, *kinds: str) -> list[dict[str, Any]]:
        """The graph's objects of ``kinds`` (children or pods), from the cache or the API."""
        cache = self._cached(*kinds)
        if cache is not None:
            return cache.owned(namespace, short_name(graph), *kinds)
        if kinds == (POD_KIND,):
            return self.kube.items(POD, namespace, labels=graph_selector(graph))
        labels = graph_selector(graph)
        return [o for k in kinds for o in self.kube.items(CHILD_KINDS[k], namespace, labels=labels)]

    def gates(self, namespace: str) -> list[PrivacyGate]:
        """The namespace's PrivacyGates that parse; broken ones are logged and left out."""
        gates: list[PrivacyGate] = []
        cache = self._cached(GATE_KIND)
        bodies = cache.gates(namespace) if cache else self.kube.items(GATES, namespace)
        for body in bodies:
            try:
                gates.append(PrivacyGate.model_validate(without_status(body)))
            except ValidationError as error:
                log.warning(
                    "PrivacyGate %s/%s is invalid: %s",
                    namespace,
                    body.get("metadata", {}).get("name"),
                    "; ".join(str(i) for i in issues_from_pydantic(error)),
                )
        return gates

    def reconcile(
        self,
        body: Mapping[str, Any],
        *,
        apply: bool = True,
        envelopes: Mapping[str, Mapping[str, Any] | None] | None = None,
        envelope_error: str | None = None,
    ) -> Outcome:
        """Bring the graph's children in line with its spec (when ``apply``) and report status."""
        meta = body["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        generation = meta.get("generation")
        try:
            graph = ModuleGraph.model_validate(without_status(body))
        except ValidationError as error:
            issues = issues_from_pydantic(error)
            outcome = Outcome(valid=False, issues=issues)
            self._report(body, outcome, _unparsable_updates(issues), {}, generation)
            return outcome

        gates = self.gates(namespace)
        present = {g.metadata.name for g in gates}
        missing = [g for g in graph.spec.gates if g not in present]
        issues = validate_graph(graph, gates)
        privacy = [i for i in issues if is_privacy_issue(i)]
        spec_issues = [i for i in issues if not is_privacy_issue(i)]
        errors = [i for i in issues if i.severity is Severity.ERROR]
        outcome = Outcome(valid=not errors and not missing, issues=issues)

        if apply and outcome.valid:
            desired = render(graph, gates, self.render_settings)
            owner = owner_reference(body)
            live = {
                (str(child["kind"]), str(child["metadata"]["name"])): child
                for child in self._owned(namespace, name, *APPLY_ORDER)
            }
            keep: set[tuple[str, str]] = set()
            for obj in desired:
                obj = dict(obj)
                obj["metadata"] = {
                    **obj["metadata"],
                    "namespace": namespace,
                    "ownerReferences": [owner],
                }
                key = (str(obj["kind"]), str(obj["metadata"]["name"]))
                keep.add(key)
                obj = drift.with_intent(obj)
                why = drift.needs_apply(obj, live.get(key))
                if why is None:  # what it holds is what we applied: an apply would be a no-op
                    continue
                learnt = self.kube.apply(obj, dry_run=True)
                applied = self.kube.apply(drift.with_fields(obj, learnt))
                if self.cache is not None:  # the next reconcile must not apply it again
                    self.cache.put(key[0], applied)
                log.info("applied %s/%s/%s: %s", namespace, key[0], key[1], why)
                outcome.applied += 1
            for key in live:
                if key not in keep:
                    self.kube.delete(CHILD_KINDS[key[0]], namespace, key[1])
                    if self.cache is not None:
                        self.cache.remove(key[0], live[key])
                    outcome.pruned.append(f"{key[0]}/{key[1]}")

        pods = self._owned(namespace, name, POD_KIND)
        observation = Observation(
            graph=graph,
            spec_issues=spec_issues,
            privacy_issues=privacy,
            missing_gates=missing,
            deployments=self._owned(namespace, name, "Deployment"),
            pods=pods,
            nodes=self._nodes() if any(unschedulable_reason(p) for p in pods) else None,
            envelopes=envelopes,
            envelope_error=envelope_error,
            gpu_resource=self.settings.gpu_resource,
            endpoint=graph_endpoint(graph, self.render_settings),
            envelope_stale_after_s=max(60.0, 3 * self.settings.envelope_interval_s),
        )
        fields, updates = compute_status(observation)
        self._report(body, outcome, updates, fields, generation)
        return outcome

    def _nodes(self) -> list[dict[str, Any]] | None:
        """The cluster's nodes, read only for a graph with unschedulable pods (to say what
        would fit them); None when the operator may not list them (RBAC without nodes)."""
        try:
            return self.kube.list_all(NODES)
        except KubeError as error:
            log.info("cannot list nodes to size unschedulable pods: %s", error)
            return None

    def _report(
        self,
        body: Mapping[str, Any],
        outcome: Outcome,
        updates: Sequence[ConditionUpdate],
        fields: Mapping[str, Any],
        generation: int | None,
    ) -> None:
        meta = body["metadata"]
        previous: Mapping[str, Any] = body.get("status") or {}
        now = conditions.now_rfc3339()
        merged = conditions.merge_conditions(
            previous.get("conditions") or [], updates, generation=generation, now=now
        )
        status = {**fields, "observedGeneration": generation, "conditions": merged}
        status["rollout"] = rollout_column(status.get("modules"))
        status["revisions"] = revision_history(
            previous.get("revisions"), body.get("spec") or {}, generation, status, now
        )
        outcome.status = status
        outcome.transitions = conditions.transitions(previous.get("conditions") or [], merged)
        if _comparable(status) != _comparable(previous):
            try:
                patched = self.kube.patch_status(
                    GRAPHS, str(meta["namespace"]), str(meta["name"]), status
                )
                outcome.status_changed = True
                if self.cache is not None:  # what the graph's next reconcile compares with
                    self.cache.set_status(
                        str(meta["namespace"]),
                        str(meta["name"]),
                        patched.get("status") or status,
                        (patched.get("metadata") or {}).get("resourceVersion"),
                    )
            except KubeError as error:
                if error.status != 404:  # deleted meanwhile: nothing to report on
                    raise


def without_status(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a custom resource the spec models describe (status is the operator's)."""
    return {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}


def _comparable(status: Mapping[str, Any]) -> dict[str, Any]:
    """Status without what changes on its own (envelope freshness moves every poll)."""
    return {k: v for k, v in status.items() if v is not None}


def _unparsable_updates(issues: Sequence[Issue]) -> list[ConditionUpdate]:
    listing = "; ".join(f"{i.path}: {i.message}" for i in issues[:3])
    message = f"{listing}. Fix the spec and apply it again."
    return [
        ConditionUpdate("Ready", "False", "InvalidSpec", f"Validated: {message}"),
        ConditionUpdate("Validated", "False", "InvalidSpec", message),
    ]
