"""The resolved graph: everything one router needs to run one graph, in one document.

The operator writes it into the graph's ConfigMap; ``modulemesh run`` writes it to a file.
The router reads nothing else, so a graph behaves the same in a cluster and on a laptop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import Field, TypeAdapter, ValidationError

from modulemesh.api.base import SpecModel
from modulemesh.api.gate import GateTag, HeaderClassifier, PrivacyGate, PrivacyGateSpec
from modulemesh.api.graph import ModuleGraph, ModuleGraphSpec


class ResolvedGraph(SpecModel):
    """A graph's spec with its gates and the endpoint of every module's sidecar."""

    name: str
    namespace: str = "default"
    generation: int | None = None
    spec: ModuleGraphSpec
    gates: dict[str, PrivacyGateSpec] = Field(default_factory=dict)
    endpoints: dict[str, str] = Field(
        default_factory=dict, description="Module name -> base URL of its sidecar."
    )
    canary_endpoints: dict[str, str] | None = Field(
        default=None,
        description="Module name -> base URL of its canary's sidecar, for each module whose "
        "canary runs (the router walks its rollout steps). Left out when there is none, so a "
        "graph without a canary resolves to the same document (and config hash) as before.",
    )

    def dumps(self) -> str:
        """Serialise as JSON (camelCase), the form stored in ConfigMaps and files."""
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=2)

    @classmethod
    def load(cls, path: str | Path) -> ResolvedGraph:
        """Read a resolved graph written by :meth:`dumps`."""
        return cls.model_validate_json(Path(path).read_text())


def resolve(
    graph: ModuleGraph,
    gates: Iterable[PrivacyGate],
    endpoints: Mapping[str, str],
    canary_endpoints: Mapping[str, str] | None = None,
) -> ResolvedGraph:
    """Bind a graph to its gates and module endpoints.

    Gates the graph does not name are left out; missing gates or endpoints are the
    validator's business (it reports them with field paths), so they are not checked here.
    """
    by_name = {g.metadata.name: g.spec for g in gates}
    return ResolvedGraph(
        name=graph.metadata.name,
        namespace=graph.metadata.namespace or "default",
        generation=graph.metadata.generation,
        spec=graph.spec,
        gates={name: by_name[name] for name in graph.spec.gates if name in by_name},
        endpoints=dict(endpoints),
        canary_endpoints=dict(canary_endpoints) if canary_endpoints else None,
    )


_GATES = TypeAdapter(dict[str, PrivacyGateSpec])


def sidecar_gates_json(gates: Iterable[PrivacyGate]) -> str | None:
    """What a module's sidecar needs to classify requests as the router does: every gate with a
    header classifier, as a compact JSON object ``{name: spec}`` (the form of
    :attr:`ResolvedGraph.gates`, keys sorted so renders are stable), cut down to its tags that
    have header classifiers, with their names and header classifiers only, so that a gate's
    regions, audit settings, descriptions or content classifiers (run by the router alone; the
    tags they give reach the sidecar in ``x-modulemesh-tags``) do not roll module pods;
    ``None`` when no gate classifies by header."""

    def headers(tag: GateTag) -> list[HeaderClassifier]:
        return [c for c in tag.classifiers if isinstance(c, HeaderClassifier)]

    specs = {
        g.metadata.name: {
            "tags": [
                {
                    "name": tag.name,
                    "classifiers": [
                        c.model_dump(mode="json", by_alias=True, exclude_none=True)
                        for c in headers(tag)
                    ],
                }
                for tag in g.spec.tags
                if headers(tag)
            ]
        }
        for g in sorted(gates, key=lambda g: g.metadata.name)
        if any(headers(tag) for tag in g.spec.tags)
    }
    if not specs:
        return None
    return json.dumps(specs, sort_keys=True, separators=(",", ":"))


def parse_gates_json(text: str) -> dict[str, PrivacyGateSpec]:
    """Read what :func:`sidecar_gates_json` wrote; ``ValueError`` says what is wrong."""
    try:
        return _GATES.validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ValueError(f"not a JSON object of gate specs ({problems})") from None
