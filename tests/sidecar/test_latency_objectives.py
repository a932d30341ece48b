"""A module's latency objectives (``--degraded-p50-ms``, ``-p95-``, ``-p99-``): the envelope
turns Degraded when that percentile of the window is above its objective, with a reason that
names the percentile and both numbers; bad flag values are refused naming the flag. (The live
path, through the local mesh and a real sidecar, is in tests/router/test_envelope_health.py.)"""

from __future__ import annotations

import argparse

import pytest

from modulemesh.envelope import State
from modulemesh.sidecar.command import build_config, configure
from modulemesh.sidecar.config import Thresholds
from modulemesh.sidecar.health import RuntimeInfo, assess
from modulemesh.sidecar.window import WindowStats

READY = RuntimeInfo(ready=True)


def stats(p50: float, p95: float, p99: float, requests: int = 200) -> WindowStats:
    """Window figures with these percentiles (seconds) and no errors."""
    return WindowStats(requests=requests, errors=0, denials=0, request_rate=requests / 60,
                       error_rate=0.0, p50=p50, p95=p95, p99=p99, confidence=None)  # fmt: skip


@pytest.mark.parametrize(
    ("objective", "reason"),
    [
        (Thresholds(degraded_p50_seconds=0.010),
         "p50 latency 12.0 ms > objective 10.0 ms over the last 200 requests in 60 s"),
        (Thresholds(degraded_p95_seconds=0.050),
         "p95 latency 80.0 ms > objective 50.0 ms over the last 200 requests in 60 s"),
        (Thresholds(degraded_p99_seconds=0.300),
         "p99 latency 612.5 ms > objective 300.0 ms over the last 200 requests in 60 s"),
    ],
)  # fmt: skip
def test_each_percentile_objective_degrades_with_its_own_numbers(
    objective: Thresholds, reason: str
) -> None:
    assert assess(stats(0.012, 0.080, 0.6125), READY, objective, 60) == (State.DEGRADED, reason)


def test_objectives_that_hold_leave_the_module_healthy() -> None:
    objectives = Thresholds(
        degraded_p50_seconds=0.02, degraded_p95_seconds=0.1, degraded_p99_seconds=0.7
    )
    assert assess(stats(0.012, 0.080, 0.6125), READY, objectives) == (State.HEALTHY, "")


def test_the_worst_tail_is_reported_first() -> None:
    # p99 and p50 both broken: the reason names the p99 one (the tail the module breaks)
    objectives = Thresholds(degraded_p50_seconds=0.001, degraded_p99_seconds=0.1)
    state, reason = assess(stats(0.012, 0.080, 0.6125), READY, objectives, 30)
    assert state is State.DEGRADED and reason.startswith("p99 latency 612.5 ms > objective")
    assert reason.endswith("in 30 s")


def test_errors_outrank_a_broken_objective() -> None:
    errors = WindowStats(requests=100, errors=60, denials=0, request_rate=1.0, error_rate=0.6,
                         p50=1.0, p95=1.0, p99=1.0, confidence=None)  # fmt: skip
    state, reason = assess(errors, READY, Thresholds(degraded_p99_seconds=0.1))
    assert state is State.UNHEALTHY and reason.startswith("error rate")


def _config(*flags: str) -> Thresholds:
    parser = argparse.ArgumentParser()
    configure(parser)
    return build_config(parser.parse_args(["--module", "m", *flags])).thresholds


def test_flags_set_the_objectives_in_seconds() -> None:
    thresholds = _config("--degraded-p50-ms", "5", "--degraded-p95-ms", "20.5",
                         "--degraded-p99-ms", "250")  # fmt: skip
    assert thresholds.degraded_p50_seconds == 0.005
    assert thresholds.degraded_p95_seconds == 0.0205
    assert thresholds.degraded_p99_seconds == 0.25
    assert _config().degraded_p95_seconds is None


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf"])
def test_a_bad_objective_is_refused_naming_the_flag(value: str) -> None:
    with pytest.raises(ValueError, match="--degraded-p95-ms must be a positive number of ms"):
        _config("--degraded-p95-ms", value)
