"""A select budget bounds the percentile it names, read from the candidates' envelopes (the
ranking alone, on an executor that is never started; the live path, with a module frozen by
SIGSTOP, is in test_envelope_health.py): a module fast at p50 but slow at p99 is within a p50
budget and outside a p99 one, and explain names the percentile it compared."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from modulemesh.api.graph import SelectNode
from modulemesh.api.resolved import resolve
from modulemesh.envelope import HealthEnvelope, Latency, State
from modulemesh.router.executor import Executor
from modulemesh.router.nodes import select

from .conftest import make_graph, module_spec


def executor(percentile: str | None) -> Executor:
    """Select ``main`` over modules ``stalls`` (cost 1) and ``even`` (cost 5) and node ``n``,
    cost alone deciding within a 100 ms latency budget on ``percentile`` (unset: default)."""
    budget: dict[str, object] = {"maxLatencyMs": 100}
    if percentile is not None:
        budget["latencyPercentile"] = percentile
    nodes = [{"name": "main", "type": "select",
              "candidates": [{"module": "stalls"}, {"module": "even"}, {"node": "n"}],
              "weights": {"latency": 0, "cost": 1, "errorRate": 0}, "budget": budget},
             {"name": "n", "type": "sequence", "steps": [{"module": "even"}]}]  # fmt: skip
    modules = [module_spec("stalls", Path("/unused/s.onnx"), cost=1),
               module_spec("even", Path("/unused/e.onnx"), cost=5)]  # fmt: skip
    graph = make_graph("budget", modules, nodes)
    ex = Executor(
        resolve(graph, [], {"stalls": "http://127.0.0.1:9", "even": "http://127.0.0.1:9"})
    )
    now = time.time()
    ex.envelopes["stalls"].set_envelope(HealthEnvelope(
        module="stalls", state=State.HEALTHY, latency=Latency(p50=0.002, p95=0.004, p99=0.6),
        error_rate=0.0, timestamp=now))  # fmt: skip
    ex.envelopes["even"].set_envelope(HealthEnvelope(
        module="even", state=State.HEALTHY, latency=Latency(p50=0.02, p95=0.03, p99=0.04),
        error_rate=0.0, timestamp=now))  # fmt: skip
    return ex


def ranked(ex: Executor) -> list[select.Candidate]:
    node = ex.nodes["main"]
    assert isinstance(node, SelectNode)
    return select.rank(ex, node)


@pytest.mark.parametrize("percentile", [None, "p99"])
def test_a_p99_budget_passes_over_a_module_slow_at_p99(percentile: str | None) -> None:
    order = ranked(executor(percentile))
    assert [c.step.step_name for c in order] == ["n", "even", "stalls"]
    stalls = order[-1].explain()
    assert stalls["withinBudget"] is False and stalls["p99Ms"] == pytest.approx(600.0)
    assert stalls["latencyMs"] == pytest.approx(2.0)  # the score still weighs p50


def test_a_p50_budget_keeps_it() -> None:
    order = ranked(executor("p50"))
    assert order[0].step.step_name == "stalls"
    explained = [c.explain() for c in order]
    assert all("p50Ms" in c and "p99Ms" not in c for c in explained)  # node candidate too
    assert explained[0]["p50Ms"] == pytest.approx(2.0) and explained[0]["withinBudget"] is True


def test_p95_is_the_figure_a_p95_budget_compares() -> None:
    ex = executor("p95")
    ex.envelopes["stalls"].set_envelope(HealthEnvelope(
        module="stalls", state=State.HEALTHY, latency=Latency(p50=0.002, p95=0.150, p99=0.6),
        error_rate=0.0, timestamp=time.time()))  # fmt: skip
    stalls = next(c for c in ranked(ex) if c.step.step_name == "stalls").explain()
    assert stalls["p95Ms"] == pytest.approx(150.0) and stalls["withinBudget"] is False
