"""Canary analysis (modulemesh.rollout.analysis): the drift measures against values computed by
hand, their properties over random samples, and verdicts on realistic windows (lognormal
latencies, Beta-distributed confidences) where one figure at a time is made worse."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modulemesh.rollout.analysis import (
    MAX_SAMPLES,
    Tolerances,
    Window,
    compare,
    drift_bins,
    ks_statistic,
    p99,
    psi,
)

samples = st.lists(
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=1, max_size=200
)


# -- measures ---------------------------------------------------------------------------------


def test_ks_statistic_by_hand() -> None:
    # F_x(2) = 2/3 while F_y(2) = 0: the largest gap.
    assert ks_statistic([1, 2, 3], [2.5, 3.5, 4.5]) == pytest.approx(2 / 3)
    assert ks_statistic([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert ks_statistic([0.5, 0.5, 0.7], [0.5, 0.7, 0.5]) == 0.0


def test_psi_by_hand() -> None:
    # Two bins split at the expected median (0.5): expected 50/50, actual 80/20.
    expected = [0.25] * 50 + [0.75] * 50
    actual = [0.25] * 80 + [0.75] * 20
    by_hand = (0.8 - 0.5) * np.log(0.8 / 0.5) + (0.2 - 0.5) * np.log(0.2 / 0.5)
    assert psi(expected, actual, bins=2) == pytest.approx(by_hand)


def test_empty_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        psi([], [0.1])
    with pytest.raises(ValueError, match="non-empty"):
        ks_statistic([0.1], [])


@settings(max_examples=200, deadline=None)
@given(samples, samples)
def test_ks_is_a_symmetric_gap_in_unit_interval(x: list[float], y: list[float]) -> None:
    d = ks_statistic(x, y)
    assert 0.0 <= d <= 1.0
    assert d == pytest.approx(ks_statistic(y, x))
    assert ks_statistic(x, list(reversed(x))) == 0.0


@settings(max_examples=200, deadline=None)
@given(samples, samples)
def test_psi_is_non_negative_and_zero_on_the_same_sample(x: list[float], y: list[float]) -> None:
    assert psi(x, y) >= -1e-12
    assert psi(x, x) == pytest.approx(0.0, abs=1e-12)


def test_p99_interpolates() -> None:
    assert p99(range(101)) == pytest.approx(99.0)


# -- verdicts ---------------------------------------------------------------------------------


def _window(
    rng: np.random.Generator,
    n: int = 400,
    *,
    latency_ms: float = 2.0,
    error_rate: float = 0.0,
    confidence: tuple[float, float] = (8.0, 2.0),
) -> Window:
    """``n`` calls: lognormal latency around ``latency_ms``, Beta(a, b) confidences."""
    window = Window()
    latencies = rng.lognormal(np.log(latency_ms), 0.25, n)
    failed = rng.random(n) < error_rate
    confidences = rng.beta(*confidence, n)
    for lat, bad, conf in zip(latencies, failed, confidences, strict=True):
        window.record(float(lat), not bad, float(conf))
    return window


def _failed(verdict_figures: list[dict[str, object]]) -> list[object]:
    return [f["name"] for f in verdict_figures if not f["passed"]]


def test_equal_versions_pass_every_figure() -> None:
    rng = np.random.default_rng(1)
    verdict = compare(_window(rng), _window(rng), Tolerances())
    assert verdict.passed is True, verdict.reason
    assert [f.name for f in verdict.figures] == [
        "errorRate", "p99LatencyMs", "confidenceMean", "confidencePsi", "confidenceKs",
    ]  # fmt: skip
    assert "stable 400 calls, canary 400" in verdict.reason


def test_an_error_rate_fails_with_its_numbers() -> None:
    rng = np.random.default_rng(2)
    verdict = compare(_window(rng), _window(rng, error_rate=0.1), Tolerances())
    assert verdict.passed is False
    assert _failed(verdict.as_dict()["figures"]) == ["errorRate"]  # type: ignore[arg-type]
    figure = verdict.figures[0]
    assert figure.stable == 0.0 and 0.06 < (figure.canary or 0) < 0.14
    assert figure.limit == pytest.approx(0.01)
    assert verdict.reason.startswith("error rate 0.")
    assert "is above its limit 0.01 (stable 0)" in verdict.reason


def test_a_slower_canary_fails_p99_but_noise_within_the_grace_does_not() -> None:
    rng = np.random.default_rng(3)
    stable = _window(rng, latency_ms=2.0)
    slow = compare(stable, _window(rng, latency_ms=20.0), Tolerances())
    assert slow.passed is False
    assert _failed(slow.as_dict()["figures"]) == ["p99LatencyMs"]  # type: ignore[arg-type]
    assert "p99 latency (ms)" in slow.reason
    # 1.5 ms slower than a 2 ms stable is over the ratio but within the 5 ms grace.
    near = compare(stable, _window(rng, latency_ms=3.5), Tolerances())
    assert near.passed is True, near.reason
    strict = compare(stable, _window(rng, latency_ms=3.5), Tolerances(latency_grace_ms=0.0))
    assert strict.passed is False


def test_shifted_confidences_fail_mean_and_drift() -> None:
    rng = np.random.default_rng(4)
    verdict = compare(_window(rng), _window(rng, confidence=(4.0, 4.0)), Tolerances())
    assert verdict.passed is False
    failed = _failed(verdict.as_dict()["figures"])  # type: ignore[arg-type]
    assert failed == ["confidenceMean", "confidencePsi", "confidenceKs"]
    assert verdict.reason.startswith("mean confidence 0.")


def test_a_wider_confidence_spread_with_the_same_mean_is_caught_by_drift_alone() -> None:
    rng = np.random.default_rng(5)
    stable = _window(rng, confidence=(40.0, 40.0))  # mean 0.5, narrow
    canary = _window(rng, confidence=(1.0, 1.0))  # mean 0.5, uniform
    verdict = compare(stable, canary, Tolerances())
    failed = _failed(verdict.as_dict()["figures"])  # type: ignore[arg-type]
    assert "confidenceMean" not in failed
    assert {"confidencePsi", "confidenceKs"} <= set(failed)


def test_psi_of_one_distribution_in_small_windows_stays_under_the_alarm() -> None:
    # Uncorrected, 10-bin PSI of 30 against 150 draws of one distribution is above 0.2 in
    # most trials (its expectation is 9 * (1/30 + 1/150) = 0.36).
    rng = np.random.default_rng(8)
    trials = [(rng.beta(8, 2, 150), rng.beta(8, 2, 30)) for _ in range(300)]
    raw = [psi(s, c) > 0.2 for s, c in trials]
    corrected = [psi(s, c, drift_bins(150, 30), corrected=True) > 0.2 for s, c in trials]
    assert sum(raw) > 200
    assert sum(corrected) <= 9  # 3 %


def test_windows_of_one_distribution_pass_at_the_default_minimum() -> None:
    rng = np.random.default_rng(9)
    need = Tolerances().min_samples
    verdicts = [
        compare(_window(rng, 5 * need), _window(rng, need), Tolerances()) for _ in range(200)
    ]
    failed = [v.reason for v in verdicts if not v.passed]
    assert len(failed) <= 1, failed


def test_too_few_calls_is_no_verdict() -> None:
    rng = np.random.default_rng(6)
    verdict = compare(_window(rng, 400), _window(rng, 19), Tolerances(min_samples=20))
    assert verdict.passed is None
    assert verdict.reason == "waiting for calls: stable 400, canary 19, each needs 20"


def test_without_confidences_the_confidence_figures_do_not_decide() -> None:
    stable, canary = Window(), Window()
    for i in range(50):
        stable.record(1.0 + i % 3, True)
        canary.record(1.0 + i % 3, True)
    verdict = compare(stable, canary, Tolerances(min_samples=20))
    assert verdict.passed is True
    notes = [f.note for f in verdict.figures if f.name.startswith("confidence")]
    assert notes == ["not measured: confidences of stable 0, canary 0, each needs 20"] * 3


def test_failed_calls_have_no_confidence_and_a_window_is_bounded() -> None:
    window = Window()
    window.record(3.0, False, 0.9)
    assert list(window.confidences) == [] and window.error_rate == 1.0
    for _ in range(MAX_SAMPLES + 10):
        window.record(1.0, True, 0.5)
    assert window.calls == MAX_SAMPLES
    assert window.summary()["errorRate"] == 0.0
