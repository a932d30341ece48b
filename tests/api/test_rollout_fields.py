"""A module's canary and rollout policy and a graph's capture (issue 16): the defaults, what a
valid policy reads as, and each mistake refused by `modulemesh validate`'s loader with the
field path and what to do."""

from __future__ import annotations

from typing import Any

import pytest

from modulemesh.api.gate import GateTag
from modulemesh.api.graph import Agreement, CapturePolicy, Module, RolloutPolicy
from tests.api.graph_builders import check, graph, module, one_error

CANARY = {"model": {"path": "classifier-v2.onnx"}, "version": "2"}


def _with(**fields: Any) -> dict[str, Any]:
    """The baseline graph with its classifier module given ``fields``."""
    return graph(modules=[module("embedder"), module("classifier", **fields)])


def test_defaults_are_four_steps_of_a_minute_and_argmax_shadow_agreement() -> None:
    policy = RolloutPolicy()
    assert [(s.percent, s.shadow, s.hold_seconds) for s in policy.steps] == [
        (5, False, 60.0), (25, False, 60.0), (50, False, 60.0), (100, False, 60.0),
    ]  # fmt: skip
    assert policy.tolerances.min_samples == 100
    assert policy.shadow_comparison.agreement is Agreement.ARGMAX


def test_a_canary_without_a_policy_rolls_out_by_the_defaults() -> None:
    m = Module.model_validate({"name": "c", "model": {"path": "a.onnx"}, "canary": CANARY})
    assert m.rollout is None and m.rollout_policy == RolloutPolicy()


def test_a_full_policy_validates() -> None:
    policy = {
        "steps": [
            {"percent": 100, "shadow": True, "holdRequests": 200},
            {"percent": 10, "holdSeconds": 30},
            {"percent": 100, "holdSeconds": 30, "holdRequests": 500},
        ],
        "tolerances": {"maxErrorRateIncrease": 0.02, "maxP99Ratio": 2, "minSamples": 50},
        "shadowComparison": {"agreement": "values", "atol": 0.001, "minAgreement": 0.95},
    }
    assert check(_with(canary=CANARY, rollout=policy)) == []


@pytest.mark.parametrize(
    ("fields", "path", "words"),
    [
        (
            {"canary": CANARY, "rollout": {"steps": [{"percent": 5}]}},
            "spec.modules[1].rollout.steps[0]",
            ["needs holdSeconds, holdRequests or both"],
        ),
        (
            {
                "rollout": {
                    "steps": [{"percent": 50, "holdSeconds": 1}, {"percent": 25, "holdSeconds": 1}]
                }
            },
            "spec.modules[1].rollout",
            ["steps[1].percent 25 must be above the previous traffic step's 50"],
        ),
        (
            {
                "rollout": {
                    "steps": [
                        {"percent": 5, "holdSeconds": 1},
                        {"percent": 5, "shadow": True, "holdSeconds": 1},
                    ]
                }
            },
            "spec.modules[1].rollout",
            ["steps[1] is a shadow step after a traffic step", "shadow steps come first"],
        ),
        (
            {"rollout": {"steps": [{"percent": 0, "holdSeconds": 1}]}},
            "spec.modules[1].rollout.steps[0].percent",
            ["greater than or equal to 1"],
        ),
        (
            {"rollout": {"steps": [{"percent": 101, "holdSeconds": 1}]}},
            "spec.modules[1].rollout.steps[0].percent",
            ["less than or equal to 100"],
        ),
        (
            {"rollout": {"steps": []}},
            "spec.modules[1].rollout.steps",
            ["at least 1"],
        ),
        (
            {"rollout": {"tolerances": {"maxP99Ratio": 0.5}}},
            "spec.modules[1].rollout.tolerances.maxP99Ratio",
            ["greater than or equal to 1"],
        ),
        (
            {"rollout": {"shadowComparison": {"agreement": "exact"}}},
            "spec.modules[1].rollout.shadowComparison.agreement",
            ["'argmax' or 'values'"],
        ),
        (
            {"canary": {"model": {"path": "classifier.onnx"}, "version": "1"}},
            "spec.modules[1]",
            ["canary has the module's own model and version '1': nothing to roll out"],
        ),
        (
            {"canary": {"model": {"path": "classifier-v2.onnx"}}},
            "spec.modules[1].canary.version",
            ["required"],
        ),
    ],
)
def test_mistakes_are_refused_naming_the_field(
    fields: dict[str, Any], path: str, words: list[str]
) -> None:
    one_error(check(_with(**fields)), path, *words)


def test_capture_defaults_and_bounds() -> None:
    assert check(graph(capture={"rate": 0.1})) == []
    policy = CapturePolicy.model_validate({"rate": 0.1})
    assert (policy.path, policy.max_requests, policy.max_bytes, policy.max_record_bytes) == (
        "capture.jsonl", 1000, 64 << 20, 1 << 20,
    )  # fmt: skip
    assert GateTag.model_validate({"name": "phi"}).capturable is False


@pytest.mark.parametrize(
    ("capture", "path", "words"),
    [
        ({}, "spec.capture.rate", ["required"]),
        ({"rate": 0}, "spec.capture.rate", ["greater than 0"]),
        ({"rate": 1.5}, "spec.capture.rate", ["less than or equal to 1"]),
        ({"rate": 1, "maxBytes": 10}, "spec.capture.maxBytes", ["greater than or equal to 1024"]),
        ({"rate": 1, "maxRequests": 0}, "spec.capture.maxRequests", ["greater than or equal to 1"]),
        ({"rate": 1, "path": ""}, "spec.capture.path", ["at least 1 character"]),
    ],
)
def test_capture_mistakes_are_refused_naming_the_field(
    capture: dict[str, Any], path: str, words: list[str]
) -> None:
    one_error(check(graph(capture=capture)), path, *words)
