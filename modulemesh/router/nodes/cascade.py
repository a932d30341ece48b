"""``cascade``: cheapest candidate first; escalate to the next while ``escalateWhen`` (CEL
over the candidate's ``output``) holds, or when the candidate fails or times out while the
request still has time.

Every candidate but the last runs within a share of the time left (:func:`share`), so a hung
cheap candidate cannot use up the deadline the better ones need; the last gets all that
remains."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from modulemesh.api.graph import CascadeNode, Target
from modulemesh.cel import EvaluationError
from modulemesh.router.context import Output, RequestContext, Tensors
from modulemesh.router.errors import RouteError
from modulemesh.router.tensors import map_inputs

if TYPE_CHECKING:
    from modulemesh.router.executor import Executor

_NOT_ESCALATED = frozenset({400, 403, 422})
"""Failures another candidate would not mend: the client's request, or a privacy refusal
(which stays fail-closed)."""


def share(ex: Executor, later: Sequence[Target], remaining: float) -> float:
    """Seconds a candidate may take of ``remaining``: what is left after keeping one call's
    timeout for each ``later`` candidate, and never less than an equal split of it."""
    reserve = sum(ex.timeout_of(target) for target in later)
    return max(remaining - reserve, remaining / (len(later) + 1))


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
        if index == last_index:
            out = await ex.call(step, ctx, step_inputs, node=node.name, step=name, final=final)
            ctx.note("decision", node=node.name, step=name, escalate=False, last=True)
            return out
        left = ctx.remaining()
        seconds = share(ex, node.candidates[index + 1 :], left)
        ends = time.monotonic() + seconds
        try:
            with ctx.share(seconds):
                out = await ex.call(step, ctx, step_inputs, node=node.name, step=name)
        except RouteError as exc:
            if exc.status in _NOT_ESCALATED or ctx.remaining() <= 0:
                raise
            timed_out = exc.status == 504
            if timed_out and time.monotonic() >= ends:
                reason = (
                    f"timed out: no answer within its share of the deadline "
                    f"({seconds * 1000:.0f} of the {left * 1000:.0f} ms left; the rest is kept "
                    "for the candidates after it)"
                )
            else:
                reason = f"{'timed out' if timed_out else 'failed'}: {exc}"
            ctx.note("escalate", node=node.name, step=name, timedOut=timed_out, reason=reason)
            continue
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
