"""``switch``: the first case whose CEL condition over ``request`` holds, else ``default``;
with neither, 422 naming the switch (never a silent 404)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modulemesh.api.graph import SwitchNode
from modulemesh.cel import EvaluationError
from modulemesh.router.context import Output, RequestContext, Tensors
from modulemesh.router.errors import RouteError

if TYPE_CHECKING:
    from modulemesh.router.executor import Executor


async def run(
    ex: Executor, node: SwitchNode, ctx: RequestContext, inputs: Tensors, final: bool
) -> Output:
    """Pick the case and run its target."""
    context = {"request": ctx.request_vars()}
    for index, case in enumerate(node.cases):
        try:
            matched = ex.condition(node.name, index).evaluate(context)
        except EvaluationError as exc:
            raise RouteError(
                422, f"switch {node.name!r} case {index} ({case.when!r}): {exc}", node=node.name
            ) from None
        if matched:
            ctx.note("decision", node=node.name, case=index, when=case.when, target=case.ref)
            return await ex.call(
                case, ctx, inputs, node=node.name, step=f"cases[{index}]", final=final
            )
    if node.default is not None:
        ctx.note("decision", node=node.name, case="default", target=node.default.ref)
        return await ex.call(node.default, ctx, inputs, node=node.name, step="default", final=final)
    raise RouteError(
        422,
        f"switch {node.name!r}: no case matched the request and there is no default "
        f"(onNoMatch: reject); conditions tried: {[c.when for c in node.cases]}",
        node=node.name,
    )
