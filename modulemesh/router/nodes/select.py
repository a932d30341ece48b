"""``select``: choose among candidates by their live envelopes.

Score = ``weights.latency`` x p50 latency (ms) + ``weights.cost`` x cost + ``weights.errorRate``
x error rate; lowest wins. Candidates whose known figures break the budget are passed over
while one within it exists; the latency budget bounds the percentile the budget names
(``latencyPercentile``, p99 by default), so a module that is fast on most requests but stalls
on a few (its p50 fine, its p99 not) is out of a p99 budget. Stale or missing envelopes count as unknown: an unknown figure
scores as the worst known one among the candidates (0 if none is known), so an unmeasured
module is neither favoured nor shunned. If the chosen candidate fails, the next best is tried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modulemesh.api.graph import Percentile, SelectNode, Step
from modulemesh.envelope import State
from modulemesh.router.context import Output, RequestContext, Tensors
from modulemesh.router.errors import RouteError
from modulemesh.router.tensors import map_inputs

if TYPE_CHECKING:
    from modulemesh.router.executor import Executor


@dataclass
class Candidate:
    """A candidate's figures (None = unknown) and its score."""

    step: Step
    latency_ms: float | None
    """p50 latency, for the score."""
    cost: float
    error_rate: float | None
    budget_latency_ms: float | None = None
    """Latency at the budget's percentile, for the budget."""
    percentile: Percentile = Percentile.P99
    """The percentile of ``budget_latency_ms``."""
    ejected: bool = False
    score: float = 0.0
    within_budget: bool = True

    def explain(self) -> dict[str, Any]:
        return {
            "step": self.step.step_name,
            "latencyMs": self.latency_ms,
            f"{self.percentile.value}Ms": self.budget_latency_ms,
            "cost": self.cost,
            "errorRate": self.error_rate,
            "score": round(self.score, 4),
            "withinBudget": self.within_budget,
            **({"ejected": True} if self.ejected else {}),
        }


def rank(ex: Executor, node: SelectNode) -> list[Candidate]:
    """Candidates, best first."""
    out: list[Candidate] = []
    percentile = node.budget.latency_percentile
    for step in node.candidates:
        if step.module is None:
            out.append(Candidate(step, None, 1.0, None, percentile=percentile))
            continue
        env = ex.envelopes.state(step.module, node.stale_after_seconds)
        known = env.state is not State.UNKNOWN
        p50 = env.latency.p50
        tail: float | None = getattr(env.latency, percentile.value)
        out.append(
            Candidate(
                step,
                latency_ms=None if not known or p50 is None else p50 * 1000.0,
                cost=ex.modules[step.module].cost,
                error_rate=env.error_rate if known else None,
                budget_latency_ms=None if not known or tail is None else tail * 1000.0,
                percentile=percentile,
                ejected=ex.breakers[step.module].acquire_would_refuse(),
            )
        )
    worst_latency = max((c.latency_ms for c in out if c.latency_ms is not None), default=0.0)
    worst_errors = max((c.error_rate for c in out if c.error_rate is not None), default=0.0)
    w, budget = node.weights, node.budget
    for c in out:
        latency = worst_latency if c.latency_ms is None else c.latency_ms
        errors = worst_errors if c.error_rate is None else c.error_rate
        c.score = w.latency * latency + w.cost * c.cost + w.error_rate * errors
        c.within_budget = not (
            (budget.max_latency_ms is not None and c.budget_latency_ms is not None
             and c.budget_latency_ms > budget.max_latency_ms)
            or (budget.max_cost is not None and c.cost > budget.max_cost)
            or (budget.max_error_rate is not None and c.error_rate is not None
                and c.error_rate > budget.max_error_rate)
        )  # fmt: skip
    return sorted(out, key=lambda c: (c.ejected, not c.within_budget, c.score))


async def run(
    ex: Executor, node: SelectNode, ctx: RequestContext, inputs: Tensors, final: bool
) -> Output:
    """Call the best candidate; on failure, the next best."""
    ranked = rank(ex, node)
    ctx.note("decision", node=node.name, chosen=ranked[0].step.step_name,
             candidates=[c.explain() for c in ranked])  # fmt: skip
    scope: dict[str, Tensors] = {"request": ctx.inputs}
    error: RouteError | None = None
    for c in ranked:
        name = c.step.step_name
        step_inputs = map_inputs(c.step.inputs, scope, inputs, f"node {node.name!r} step {name!r}")
        try:
            return await ex.call(c.step, ctx, step_inputs, node=node.name, step=name, final=final)
        except RouteError as exc:
            if exc.status in (400, 403, 422, 504):
                raise
            error = exc
            ctx.note("select-next", node=node.name, step=name, reason=str(exc))
    assert error is not None
    raise error
