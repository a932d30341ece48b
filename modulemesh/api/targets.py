"""Every place a routing node calls something, with the field path it is written at.

Validation (references, cycles, reachability) and the static privacy check walk the same
edges, so they are listed once here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from modulemesh.api.graph import (
    CascadeNode,
    EnsembleNode,
    Node,
    SelectNode,
    SequenceNode,
    SplitNode,
    SwitchNode,
    Target,
    ValidateNode,
)


@dataclass(frozen=True, slots=True)
class TargetRef:
    """A target inside a node: ``field`` is relative to the node, e.g. ``cases[0]``."""

    field: str
    target: Target


def node_targets(node: Node) -> Iterator[TargetRef]:
    """Every target ``node`` may call, in the order they are written."""
    if isinstance(node, SequenceNode | EnsembleNode):
        for i, step in enumerate(node.steps):
            yield TargetRef(f"steps[{i}]", step)
    elif isinstance(node, SwitchNode):
        for i, case in enumerate(node.cases):
            yield TargetRef(f"cases[{i}]", case)
        if node.default is not None:
            yield TargetRef("default", node.default)
    elif isinstance(node, SplitNode):
        for i, arm in enumerate(node.targets):
            yield TargetRef(f"targets[{i}]", arm)
        if node.mirror is not None:
            yield TargetRef("mirror", node.mirror)
    elif isinstance(node, CascadeNode | SelectNode):
        for i, candidate in enumerate(node.candidates):
            yield TargetRef(f"candidates[{i}]", candidate)
    elif isinstance(node, ValidateNode):
        yield TargetRef("generator", node.generator)
        yield TargetRef("validator", node.validator)
        if node.corrector is not None:
            yield TargetRef("corrector", node.corrector)
        if node.fallback is not None:
            yield TargetRef("fallback", node.fallback)
