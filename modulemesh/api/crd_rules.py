"""Cross-field rules the API server checks at admission, as CEL ``x-kubernetes-validations``.

They mirror the models' own validators (exactly-one-of, pinned https URIs, fallback targets)
plus the reference checks cheap enough for admission (entry and module fallbacks exist, split
weights sum to 100). Everything that needs the whole graph and a good message with suggestions
(cycles, reachability, the privacy check) stays in semantic validation. The lists these rules
iterate over carry ``maxItems`` in the models, which keeps the rules' estimated cost within
the API server's budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from modulemesh.api.base import SpecModel
from modulemesh.api.graph import (
    GraphPolicy,
    ModelSource,
    ModuleGraphSpec,
    RolloutStep,
    Routing,
    SplitNode,
    SwitchNode,
    Target,
    ValidateNode,
)
from modulemesh.api.structural import Rule

RULES: Mapping[type[BaseModel], Sequence[Rule]] = {
    ModelSource: (
        Rule(
            "(has(self.path) ? 1 : 0) + (has(self.uri) ? 1 : 0)"
            " + (has(self.configMap) ? 1 : 0) + (has(self.pvc) ? 1 : 0) == 1",
            "set exactly one of path, uri, configMap, pvc",
        ),
        Rule(
            "!has(self.uri) || !self.uri.startsWith('https://') || has(self.sha256)",
            "an https:// uri must be pinned by sha256",
            field_path=".sha256",
            reason="FieldValueRequired",
        ),
    ),
    Target: (Rule("has(self.module) != has(self.node)", "set exactly one of module, node"),),
    SwitchNode: (
        Rule(
            "has(self.default) || has(self.onNoMatch)",
            "a switch needs a default target or onNoMatch: reject",
            field_path=".default",
            reason="FieldValueRequired",
        ),
    ),
    SplitNode: (
        Rule(
            "self.targets.map(t, t.weight).sum() == 100",
            "split target weights must sum to 100",
            field_path=".targets",
        ),
    ),
    ValidateNode: (
        Rule(
            "!has(self.onExhausted) || self.onExhausted != 'fallback' || has(self.fallback)",
            "onExhausted: fallback needs a fallback target",
            field_path=".fallback",
            reason="FieldValueRequired",
        ),
    ),
    GraphPolicy: (
        Rule(
            "!has(self.fallbackOn) || 'Unhealthy' in self.fallbackOn",
            "fallbackOn must list Unhealthy (an Unhealthy module always falls back)",
            field_path=".fallbackOn",
        ),
    ),
    RolloutStep: (
        Rule(
            "has(self.holdSeconds) || has(self.holdRequests)",
            "a rollout step needs holdSeconds, holdRequests or both",
            field_path=".holdSeconds",
            reason="FieldValueRequired",
        ),
    ),
    Routing: (
        Rule(
            "self.nodes.exists(n, n.name == self.entry)",
            "entry must name a node in nodes",
            field_path=".entry",
        ),
    ),
    ModuleGraphSpec: (
        Rule(
            "self.modules.all(m, !has(m.fallback) || self.modules.exists(o, o.name == m.fallback))",
            "a module's fallback must name a module in modules",
            field_path=".modules",
        ),
    ),
}


def _api_models() -> dict[str, type[BaseModel]]:
    """The spec models of ``modulemesh.api`` by class name (pydantic's ``$defs`` key)."""
    found: dict[str, type[BaseModel]] = {}
    stack: list[type[BaseModel]] = [SpecModel]
    while stack:
        cls = stack.pop()
        if cls.__module__.startswith("modulemesh.api."):
            found.setdefault(cls.__name__, cls)
        stack.extend(cls.__subclasses__())
    return found


def rules_for(def_name: str) -> Sequence[Rule]:
    """The rules of the model called ``def_name`` and of the models it inherits from."""
    cls = _api_models().get(def_name)
    if cls is None:
        return ()
    return tuple(rule for base in cls.__mro__ for rule in RULES.get(base, ()))
