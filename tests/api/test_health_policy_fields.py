"""The graph fields of envelope-driven health: a select budget names its percentile (p99 by
default; the old maxLatencyMs alone still reads), modules declare latency objectives, and
policy.fallbackOn says which envelope states pass a module over for its fallback; bad values
are refused naming the field."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from modulemesh.api.graph import (
    FallbackState,
    GraphPolicy,
    HealthThresholds,
    Percentile,
    SelectBudget,
)


def test_a_budget_without_a_percentile_bounds_p99() -> None:
    budget = SelectBudget.model_validate({"maxLatencyMs": 250})
    assert budget.max_latency_ms == 250 and budget.latency_percentile is Percentile.P99


@pytest.mark.parametrize("percentile", ["p50", "p95", "p99"])
def test_a_budget_names_its_percentile(percentile: str) -> None:
    budget = SelectBudget.model_validate({"maxLatencyMs": 5, "latencyPercentile": percentile})
    assert budget.latency_percentile.value == percentile


@pytest.mark.parametrize("percentile", ["p90", "P99", "99", ""])
def test_an_unknown_percentile_is_refused_naming_the_field(percentile: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="latencyPercentile"):
        SelectBudget.model_validate({"latencyPercentile": percentile})


def test_latency_objectives_per_percentile() -> None:
    h = HealthThresholds.model_validate({"degradedP50Ms": 5, "degradedP95Ms": 50})
    assert (h.degraded_p50_ms, h.degraded_p95_ms, h.degraded_p99_ms) == (5, 50, None)
    with pytest.raises(pydantic.ValidationError, match="degradedP95Ms"):
        HealthThresholds.model_validate({"degradedP95Ms": 0})


def test_fallback_on_defaults_to_unhealthy_only() -> None:
    assert GraphPolicy().fallback_on == [FallbackState.UNHEALTHY]
    both = GraphPolicy.model_validate({"fallbackOn": ["Unhealthy", "Degraded"]})
    assert both.fallback_on == [FallbackState.UNHEALTHY, FallbackState.DEGRADED]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["Degraded"], "fallbackOn must list Unhealthy"),
        (["Unhealthy", "Unhealthy"], "fallbackOn lists a state twice"),
        ([], "fallbackOn"),
        (["Unhealthy", "Unknown"], "fallbackOn"),
    ],
)
def test_bad_fallback_on_is_refused_naming_the_field(value: Any, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        GraphPolicy.model_validate({"fallbackOn": value})
