"""The graph's v2 model metadata: the entry's inputs and the final outputs.

Derived from the modules' own metadata (fetched from them through their sidecars, cached once
answered) by walking the routing tree: which request tensors the entry reads, and which
tensors the entry node finally returns.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

from modulemesh.api.graph import (
    EnsembleNode,
    MergeStrategy,
    SequenceNode,
    SplitNode,
    Step,
    SwitchNode,
    Target,
    ValidateNode,
)
from modulemesh.router.errors import RouteError

if TYPE_CHECKING:
    from modulemesh.router.executor import Executor

__all__ = ["GraphMetadata"]

Tensor = dict[str, Any]


class GraphMetadata:
    """Computes (and caches) ``GET /v2/models/{graph}``."""

    def __init__(self, ex: Executor) -> None:
        self.ex = ex
        self._modules: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    async def document(self) -> dict[str, Any]:
        """The v2 metadata document of the graph."""
        async with self._lock:
            await asyncio.gather(*(self._module(m) for m in self.ex.modules))
        entry = Target(node=self.ex.spec.routing.entry)
        return {
            "name": self.ex.graph,
            "versions": [],
            "platform": "modulemesh_graph",
            "inputs": self._inputs(entry),
            "outputs": self._outputs(entry),
        }

    async def _module(self, name: str) -> None:
        if name in self._modules:
            return
        status, body = await self.ex.clients[name].get(f"/v2/models/{name}", timeout=5.0)
        if status != 200:
            raise RouteError(
                503, f"metadata of module {name!r} unavailable (HTTP {status})", module=name
            )
        try:
            self._modules[name] = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise RouteError(502, f"metadata of module {name!r} is not JSON", module=name) from None

    def _tensors(self, module: str, kind: str) -> list[Tensor]:
        return [dict(t) for t in self._modules[module].get(kind, [])]

    def _inputs(self, target: Target, first: bool = True) -> list[Tensor]:
        if target.module is not None:
            return self._tensors(target.module, "inputs")
        node = self.ex.nodes[str(target.node)]
        found: dict[str, Tensor] = {}
        if isinstance(node, ValidateNode):
            steps: list[Target] = [node.generator]
        elif isinstance(node, SwitchNode):
            steps = [c for c in node.cases] + ([node.default] if node.default else [])
        elif isinstance(node, SplitNode):
            steps = list(node.targets)
        elif isinstance(node, SequenceNode | EnsembleNode):
            steps = list(node.steps)
        else:
            steps = list(node.candidates)
        for index, step in enumerate(steps):
            mapping = step.inputs if isinstance(step, Step) else None
            if mapping is None:
                if isinstance(node, SequenceNode) and index > 0:
                    continue
                for tensor in self._inputs(step, first=False):
                    found.setdefault(tensor["name"], tensor)
                continue
            target_inputs = {t["name"]: t for t in self._inputs(step, first=False)}
            for input_name, ref in mapping.items():
                source, _, tensor_name = ref.partition(".")
                if source == "request":
                    tensor = dict(
                        target_inputs.get(input_name, {"datatype": "FP32", "shape": [-1]})
                    )
                    tensor["name"] = tensor_name
                    found.setdefault(tensor_name, tensor)
        return list(found.values())

    def _outputs(self, target: Target) -> list[Tensor]:
        if target.module is not None:
            return self._tensors(target.module, "outputs")
        node = self.ex.nodes[str(target.node)]
        if isinstance(node, SequenceNode):
            if node.outputs is None:
                return self._outputs(node.steps[-1])
            steps = {s.step_name: s for s in node.steps}
            out = []
            for name, ref in node.outputs.items():
                source, _, tensor_name = ref.partition(".")
                produced = (
                    {t["name"]: t for t in self._outputs(steps[source])} if source in steps else {}
                )
                tensor = dict(produced.get(tensor_name, {"datatype": "FP32", "shape": [-1]}))
                tensor["name"] = name
                out.append(tensor)
            return out
        if isinstance(node, EnsembleNode):
            if node.merge is MergeStrategy.KEYED:
                return [
                    {**t, "name": f"{s.step_name}.{t['name']}"}
                    for s in node.steps
                    for t in self._outputs(s)
                ]
            first = self._outputs(node.steps[0])
            if node.merge is MergeStrategy.CONCAT:
                return [{**t, "shape": [*t.get("shape", [-1])[:-1], -1]} for t in first]
            if node.merge is MergeStrategy.VOTE:
                return [{**t, "datatype": "FP32"} for t in first]
            return first
        if isinstance(node, ValidateNode):
            return self._outputs(node.generator)
        if isinstance(node, SwitchNode):
            return self._outputs(node.cases[0])
        if isinstance(node, SplitNode):
            return self._outputs(node.targets[0])
        return self._outputs(node.candidates[0])
