"""``cascade``: cheapest candidate first; escalate to the next while ``escalateWhen`` (CEL
over the candidate's ``output``) holds, or when the candidate fails."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modulemesh.api.graph import CascadeNode
from modulemesh.cel import EvaluationError
from modulemesh.router.context import Output, RequestContext, Tensors
from modulemesh.router.errors import RouteError
from modulemesh.router.tensors import map_inputs

if TYPE_CHECKING:
    from modulemesh.router.executor import Executor


async def run(
    ex: Executor, node: CascadeNode, ctx: RequestContext, inputs: Tensors, final: bool
) -> Output:
    """Try candidates in order until one is good enough (or the last one answers).

    Only the last candidate's answer is returned unjudged, so only it may be ``final``."""
    condition = ex.condition(node.name, "escalate")
    scope: dict[str, Tensors] = {"request": ctx.inputs}
    last_index = len(node.candidates) - 1
    for index, step in enumerate(node.candidates):
        name = step.step_name
        where = f"node {node.name!r} step {name!r}"
        step_inputs = map_inputs(step.inputs, scope, inputs, where)
        try:
            out = await ex.call(
                step, ctx, step_inputs, node=node.name, step=name,
                final=final and index == last_index,
            )  # fmt: skip
        except RouteError as exc:
            if index == last_index or exc.status in (400, 403, 422, 504):
                raise
            ctx.note("escalate", node=node.name, step=name, reason=f"failed: {exc}")
            continue
        if index == last_index:
            ctx.note("decision", node=node.name, step=name, escalate=False, last=True)
            return out
        try:
            escalate = condition.evaluate({"request": ctx.request_vars(), "output": out.cel()})
        except EvaluationError as exc:
            hint = ""
            if out.confidence is None and "confidence" in condition.expression:
                hint = (
                    f"; module {out.module!r} gave no confidence (none of its outputs is a "
                    "probability distribution): name the output to use in its "
                    "confidenceOutput, or write escalateWhen over output.outputs"
                )
            raise RouteError(
                502, f"cascade {node.name!r} step {name!r}: {exc}{hint}", node=node.name
            ) from None
        ctx.note("decision", node=node.name, step=name, escalate=escalate,
                 confidence=out.confidence)  # fmt: skip
        if not escalate:
            return out
    raise AssertionError("unreachable: the last candidate returns or raises")
