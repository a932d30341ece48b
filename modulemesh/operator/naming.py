"""Names and labels of the objects a graph becomes.

Service names and label values are limited to 63 characters; a longer ``<graph>-<module>`` is
cut and suffixed with a hash of the full name, so two long names never collide and the same
graph always gets the same names.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "COMPONENT_LABEL",
    "GRAPH_LABEL",
    "INSTANCE_LABEL",
    "MANAGED_BY_LABEL",
    "MANAGED_BY_VALUE",
    "MAX_NAME",
    "MODULE_LABEL",
    "NAME_LABEL",
    "canary_label",
    "canary_name",
    "config_map_name",
    "graph_selector",
    "labels",
    "module_name",
    "network_policy_name",
    "router_name",
    "selector",
    "short_name",
]

MAX_NAME = 63

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "modulemesh-operator"
GRAPH_LABEL = "modulemesh.io/graph"
MODULE_LABEL = "modulemesh.io/module"


def short_name(*parts: str) -> str:
    """``-``-joined parts, cut to 63 characters with an 8-hex hash suffix when longer."""
    full = "-".join(parts)
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: MAX_NAME - 9].rstrip('-.')}-{digest}"


def module_name(graph: str, module: str) -> str:
    """Deployment and Service of one module."""
    return short_name(graph, module)


def canary_name(graph: str, module: str) -> str:
    """Deployment and Service of a module's canary (``spec.modules[].canary``)."""
    return short_name(graph, module, "canary")


def canary_label(module: str) -> str:
    """The module label of a canary's pods: ``<module>.canary`` (no module name has a dot), so
    the module's own Service and Deployment, which select ``<module>``, never take them."""
    return f"{module}.canary"


def router_name(graph: str) -> str:
    """Deployment and Service of the graph's router."""
    return short_name(graph, "router")


def config_map_name(graph: str) -> str:
    """ConfigMap holding the resolved graph."""
    return short_name(graph, "graph")


def network_policy_name(graph: str) -> str:
    """NetworkPolicy admitting only the router to the module pods."""
    return short_name(graph, "modules")


def selector(graph: str, component: str, module: str | None = None) -> dict[str, str]:
    """The labels a Deployment selects its pods by (immutable once created, so minimal)."""
    chosen = {GRAPH_LABEL: short_name(graph), COMPONENT_LABEL: component}
    if module is not None:
        chosen[MODULE_LABEL] = module
    return chosen


def graph_selector(graph: str) -> dict[str, str]:
    """The labels that find every object the operator manages for ``graph`` (and their pods):
    the graph label carries :func:`short_name` of the graph, never a name over 63 characters."""
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, GRAPH_LABEL: short_name(graph)}


def labels(graph: str, component: str, module: str | None = None) -> dict[str, str]:
    """Every label render puts on an object (and its pods), sorted by key."""
    value = short_name(graph)
    chosen = {
        NAME_LABEL: "modulemesh",
        INSTANCE_LABEL: value,
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        GRAPH_LABEL: value,
    }
    if module is not None:
        chosen[MODULE_LABEL] = module
    return dict(sorted(chosen.items()))
