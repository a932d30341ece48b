"""The step walk of one rollout (modulemesh.rollout.controller) on a fake clock: the split by
trace id, holds by time and by calls, judging a 100 % step against an earlier stable window,
shadow agreement, and the end states; and how two answers are compared (rollout.outputs)."""

from __future__ import annotations

import numpy as np
import pytest

from modulemesh.api.graph import Agreement, RolloutPolicy
from modulemesh.rollout.controller import Controller, Phase, Route, bucket
from modulemesh.rollout.outputs import agree, max_abs_error


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _controller(steps: list[dict[str, object]], clock: Clock, **tolerances: object) -> Controller:
    policy = RolloutPolicy.model_validate(
        {"steps": steps, "tolerances": {"minSamples": 20, **tolerances}}
    )
    return Controller("clf", policy, stable_version="1", canary_version="2", clock=clock)


def _calls(c: Controller, route: Route, n: int, latency: float = 2.0, ok: bool = True) -> None:
    rng = np.random.default_rng(n)
    for conf in rng.beta(8, 2, n):
        c.record(route, latency, ok, float(conf))


# -- split --------------------------------------------------------------------------------


def test_the_split_follows_the_trace_id_and_the_percent() -> None:
    c = _controller([{"percent": 30, "holdSeconds": 1}], Clock())
    keys = [f"{i:032x}" for i in range(4000)]
    routes = [c.route(k) for k in keys]
    assert routes == [c.route(k) for k in keys]  # reproducible
    share = routes.count(Route.CANARY) / len(routes)
    assert 0.27 < share < 0.33
    assert all(
        (bucket("clf", k) < 30) == (r is Route.CANARY) for k, r in zip(keys, routes, strict=True)
    )
    # Another module splits its own way.
    assert [bucket("other", k) < 30 for k in keys] != [r is Route.CANARY for r in routes]


def test_a_shadow_step_serves_stable_and_copies_its_share() -> None:
    c = _controller([{"percent": 100, "shadow": True, "holdSeconds": 1}], Clock())
    assert {c.route(f"{i}") for i in range(100)} == {Route.SHADOW}
    assert c.canary_share == 0


# -- holds and walk -----------------------------------------------------------------------


def test_a_step_holds_for_its_time_then_passes_and_the_last_promotes() -> None:
    clock = Clock()
    c = _controller([{"percent": 10, "holdSeconds": 30}, {"percent": 100, "holdSeconds": 30}],
                    clock)  # fmt: skip
    _calls(c, Route.STABLE, 50)
    _calls(c, Route.CANARY, 50)
    clock.now = 29.9
    assert c.evaluate() is None
    clock.now = 30.0
    passed = c.evaluate()
    assert passed is not None and (passed.kind, passed.step, passed.percent) == (
        "StepPassed",
        1,
        10,
    )
    assert c.step == 1 and c.canary.calls == 0  # a new window
    _calls(c, Route.CANARY, 50)
    clock.now = 60.0
    done = c.evaluate()
    assert done is not None and done.kind == "Promoted"
    assert "stable measured in step 1" in done.reason
    assert c.phase is Phase.PROMOTED and c.route("x") is Route.CANARY and c.canary_share == 100
    assert c.evaluate() is None


def test_a_step_held_by_calls_waits_for_the_canary_calls() -> None:
    c = _controller([{"percent": 50, "holdRequests": 40}], Clock())
    _calls(c, Route.STABLE, 60)
    _calls(c, Route.CANARY, 39)
    assert c.evaluate() is None
    _calls(c, Route.CANARY, 1)
    done = c.evaluate()
    assert done is not None and done.kind == "Promoted"


def test_too_few_calls_keeps_holding_past_the_time() -> None:
    clock = Clock()
    c = _controller([{"percent": 5, "holdSeconds": 1}], clock)
    _calls(c, Route.STABLE, 100)
    _calls(c, Route.CANARY, 5)
    clock.now = 100.0
    assert c.evaluate() is None and c.phase is Phase.PROGRESSING
    assert c.last_verdict is not None
    assert c.last_verdict["reason"] == "waiting for calls: stable 100, canary 5, each needs 20"


def test_a_failing_step_rolls_back_with_where_and_why() -> None:
    clock = Clock()
    c = _controller([{"percent": 10, "holdSeconds": 1}, {"percent": 50, "holdSeconds": 1}], clock)
    _calls(c, Route.STABLE, 50)
    _calls(c, Route.CANARY, 40)
    _calls(c, Route.CANARY, 10, ok=False)
    clock.now = 1.0
    done = c.evaluate()
    assert done is not None and done.kind == "RolledBack" and done.step == 1
    assert done.reason.startswith("step 1 of 2 (10%): error rate 0.2 is above its limit 0.01")
    assert c.phase is Phase.ROLLED_BACK and c.route("x") is Route.STABLE and c.canary_share == 0
    # Nothing is measured any more.
    _calls(c, Route.CANARY, 10)
    assert c.canary.calls == 50
    snapshot = c.snapshot()
    assert snapshot["phase"] == "RolledBack" and snapshot["reason"] == done.reason
    assert [h["type"] for h in snapshot["history"]] == ["RolledBack"]


def test_a_shadow_step_needs_agreement() -> None:
    clock = Clock()
    c = _controller([{"percent": 100, "shadow": True, "holdSeconds": 1}], clock)
    _calls(c, Route.STABLE, 50)
    _calls(c, Route.CANARY, 50)
    clock.now = 1.0
    for _ in range(19):
        c.record_agreement(True)
    assert c.evaluate() is None
    assert c.last_verdict is not None
    assert c.last_verdict["reason"] == "waiting for shadow comparisons: 19 compared, needs 20"
    for _ in range(5):
        c.record_agreement(False)
    done = c.evaluate()
    assert done is not None and done.kind == "RolledBack"
    assert "agreement 0.7917 is below its limit 0.99 (19 of 24 shadow answers agree)" in done.reason


# -- comparing answers --------------------------------------------------------------------


def test_answers_agree_by_argmax_or_values() -> None:
    a = {"p": np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)}
    b = {"p": np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]], dtype=np.float32)}
    flipped = {"p": np.array([[0.3, 0.5, 0.2], [0.2, 0.2, 0.6]], dtype=np.float32)}
    assert agree(a, b, Agreement.ARGMAX, 0.0)
    assert not agree(a, flipped, Agreement.ARGMAX, 0.0)
    assert not agree(a, b, Agreement.VALUES, 0.1)
    assert agree(a, b, Agreement.VALUES, 0.21)
    assert not agree(a, {"q": a["p"]}, Agreement.VALUES, 1.0)  # nothing in common
    assert not agree(a, {"p": a["p"][:1]}, Agreement.VALUES, 1.0)  # shapes differ
    nan = {"p": np.array([np.nan, 1.0])}
    assert agree(nan, {"p": np.array([np.nan, 1.0])}, Agreement.VALUES, 0.0)


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        (np.array([1.0, 2.0]), np.array([1.5, 1.0]), 1.0),
        (np.array([np.nan, 2.0]), np.array([np.nan, 2.0]), 0.0),
        (np.array([np.nan, 2.0]), np.array([1.0, 2.0]), float("inf")),
        (np.array([1.0]), np.array([1.0, 2.0]), None),
        (np.array(["a"], dtype=object), np.array(["a"], dtype=object), 0.0),
    ],
)
def test_max_abs_error(x: np.ndarray, y: np.ndarray, expected: float | None) -> None:  # type: ignore[type-arg]
    assert max_abs_error(x, y) == expected
