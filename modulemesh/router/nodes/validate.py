"""``validate``: generate -> validator -> (corrector) until ``acceptWhen`` holds over the
validator's output, up to ``maxAttempts``; then ``onExhausted`` (reject with 422, return the
last generated result, or call the fallback target)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modulemesh.api.graph import Exhausted, ValidateNode
from modulemesh.cel import EvaluationError
from modulemesh.router.context import Output, RequestContext, Tensors
from modulemesh.router.errors import RouteError
from modulemesh.router.tensors import map_inputs

if TYPE_CHECKING:
    from modulemesh.router.executor import Executor


async def run(
    ex: Executor, node: ValidateNode, ctx: RequestContext, inputs: Tensors, final: bool
) -> Output:
    """Loop generate/validate/correct. Generated answers are also the validator's input, so
    only the ``onExhausted: fallback`` call may be ``final``."""
    condition = ex.condition(node.name, "accept")
    scope: dict[str, Tensors] = {"request": ctx.inputs}
    gen, val, fix = node.generator, node.validator, node.corrector

    async def step_call(step_name: str, step: object, default: Tensors) -> Output:
        assert isinstance(step, type(gen))
        where = f"node {node.name!r} step {step_name!r}"
        step_inputs = map_inputs(step.inputs, scope, default, where)
        return await ex.call(step, ctx, step_inputs, node=node.name, step=step_name)

    generated = await step_call(gen.step_name, gen, inputs)
    scope[gen.step_name] = generated.tensors
    for attempt in range(1, node.max_attempts + 1):
        verdict = await step_call(val.step_name, val, generated.tensors)
        scope[val.step_name] = verdict.tensors
        try:
            accepted = condition.evaluate({"request": ctx.request_vars(), "output": verdict.cel()})
        except EvaluationError as exc:
            raise RouteError(502, f"validate {node.name!r}: {exc}", node=node.name) from None
        ctx.note("decision", node=node.name, attempt=attempt, accepted=accepted)
        if accepted:
            return generated
        if attempt == node.max_attempts:
            break
        if fix is not None:
            generated = await step_call(fix.step_name, fix, generated.tensors)
            scope[fix.step_name] = generated.tensors
        else:
            generated = await step_call(gen.step_name, gen, inputs)
        scope[gen.step_name] = generated.tensors
    ctx.note(
        "exhausted", node=node.name, attempts=node.max_attempts, action=node.on_exhausted.value
    )
    if node.on_exhausted is Exhausted.RETURN_LAST:
        return generated
    if node.on_exhausted is Exhausted.FALLBACK and node.fallback is not None:
        return await ex.call(
            node.fallback, ctx, inputs, node=node.name, step="fallback", final=final
        )
    raise RouteError(
        422,
        f"validate {node.name!r}: output not accepted ({node.accept_when!r}) after "
        f"{node.max_attempts} attempt(s) (onExhausted: reject)",
        node=node.name,
    )
