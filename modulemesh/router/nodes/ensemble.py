"""``ensemble``: steps in parallel, merged. A hard step's failure cancels its siblings at once
and the error names that step; soft steps may fail and are left out of the merge. ``first``
returns the first step to succeed and cancels the rest."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from modulemesh.api.graph import EnsembleNode, MergeStrategy, Step
from modulemesh.router.context import Output, RequestContext, Tensors
from modulemesh.router.errors import RouteError
from modulemesh.router.tensors import map_inputs, merge

if TYPE_CHECKING:
    from modulemesh.router.executor import Executor


async def run(
    ex: Executor, node: EnsembleNode, ctx: RequestContext, inputs: Tensors, final: bool
) -> Output:
    """Run all steps concurrently and merge their outputs (``first`` returns one step's
    answer unmerged, so only then may the steps be ``final``)."""
    tail = final and node.merge is MergeStrategy.FIRST
    scope: dict[str, Tensors] = {"request": ctx.inputs}
    tasks: dict[asyncio.Task[Output], Step] = {}
    for step in node.steps:
        name = step.step_name
        step_inputs = map_inputs(step.inputs, scope, inputs, f"node {node.name!r} step {name!r}")
        task = asyncio.ensure_future(
            ex.call(step, ctx, step_inputs, node=node.name, step=name, final=tail)
        )
        tasks[task] = step
    results: dict[str, Output] = {}
    failures: list[str] = []
    pending = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                step = tasks[task]
                error = task.exception()
                if error is None:
                    results[step.step_name] = task.result()
                    continue
                if not isinstance(error, RouteError):
                    raise error
                if step.soft:
                    failures.append(step.step_name)
                    ctx.note("soft-failure", node=node.name, step=step.step_name, error=str(error))
                    continue
                cancelled = len(pending)
                raise RouteError(
                    error.status,
                    f"ensemble {node.name!r}: step {step.step_name!r} failed"
                    f"{f' (cancelled {cancelled} sibling step(s))' if cancelled else ''}: {error}",
                    node=node.name, module=error.module, fallback=False,
                    retry_after=error.retry_after,
                )  # fmt: skip
            if node.merge is MergeStrategy.FIRST and results:
                break
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    if len(results) < node.min_successes:
        raise RouteError(
            502,
            f"ensemble {node.name!r}: {len(results)} step(s) succeeded, "
            f"{node.min_successes} needed (failed soft steps: {', '.join(failures) or 'none'})",
            node=node.name, fallback=False,
        )  # fmt: skip
    ordered = [(s.step_name, results[s.step_name]) for s in node.steps if s.step_name in results]
    if node.merge is MergeStrategy.FIRST:
        ctx.note("decision", node=node.name, merge="first", step=ordered[0][0])
        return ordered[0][1]
    merged = merge(node.merge, [(n, o.tensors) for n, o in ordered], f"ensemble {node.name!r}")
    ctx.note("decision", node=node.name, merge=node.merge.value, steps=[n for n, _ in ordered])
    return Output(merged, ",".join(o.module for _, o in ordered))
