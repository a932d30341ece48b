"""``sequence``: steps in order; each step's inputs are mapped from the request and earlier
steps (or, unmapped, are the previous step's outputs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modulemesh.api.graph import SequenceNode
from modulemesh.router.context import Output, RequestContext, Tensors
from modulemesh.router.tensors import map_inputs

if TYPE_CHECKING:
    from modulemesh.router.executor import Executor


async def run(
    ex: Executor, node: SequenceNode, ctx: RequestContext, inputs: Tensors, final: bool
) -> Output:
    """Run the steps in order; with ``final`` and no ``outputs`` mapping, the last step's
    answer is the graph's."""
    scope: dict[str, Tensors] = {"request": ctx.inputs}
    current = inputs
    last: Output | None = None
    last_index = len(node.steps) - 1
    for index, step in enumerate(node.steps):
        name = step.step_name
        where = f"node {node.name!r} step {name!r}"
        step_inputs = map_inputs(step.inputs, scope, current, where)
        tail = index == last_index and node.outputs is None
        last = await ex.call(
            step, ctx, step_inputs, node=node.name, step=name, final=final and tail
        )
        if not tail:  # the tail's answer goes to the caller as it is: never decoded here
            scope[name] = last.tensors
            current = last.tensors
    assert last is not None  # steps has min_length 1
    if node.outputs is None:
        return last
    where = f"node {node.name!r} outputs"
    return Output(
        map_inputs(node.outputs, scope, current, where), last.module, last.confidence_output
    )
