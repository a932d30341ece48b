"""Builders for the render tests: small graphs and gates from plain dicts, object lookups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modulemesh.api import ModuleGraph, PrivacyGate

GraphFactory = Callable[..., ModuleGraph]


def graph(
    modules: list[dict[str, Any]] | None = None,
    *,
    name: str = "g",
    namespace: str | None = "ns",
    gates: list[str] | None = None,
    **spec: Any,
) -> ModuleGraph:
    """A valid graph: the modules in one sequence (each reads `request.input`)."""
    modules = modules or [{"name": "m", "model": {"path": "m.onnx"}}]
    steps = [{"module": m["name"]} for m in modules]
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return ModuleGraph.model_validate(
        {
            "apiVersion": "modulemesh.io/v1alpha1",
            "kind": "ModuleGraph",
            "metadata": metadata,
            "spec": {
                "modules": modules,
                "routing": {
                    "entry": "main",
                    "nodes": [{"name": "main", "type": "sequence", "steps": steps}],
                },
                "gates": gates or [],
                **spec,
            },
        }
    )


def gate(name: str, tags: list[dict[str, Any]], mode: str = "enforce") -> PrivacyGate:
    """A PrivacyGate with the given tags."""
    return PrivacyGate.model_validate(
        {
            "apiVersion": "modulemesh.io/v1alpha1",
            "kind": "PrivacyGate",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"mode": mode, "tags": tags},
        }
    )


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Rendered objects of one kind by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_of(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The pod spec of the named Deployment."""
    spec: dict[str, Any] = by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]
    return spec


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    """The named container of a pod spec."""
    return next(c for c in pod["containers"] if c["name"] == name)
