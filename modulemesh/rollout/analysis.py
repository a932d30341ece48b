"""Canary analysis: the canary's window against the stable version's over the same window.

Four figures, each with a declared tolerance: error rate (absolute increase), p99 latency
(ratio plus a grace in milliseconds, so a 1 ms module is not failed for 0.4 ms of scheduling
noise), mean confidence (drop) and the drift of the confidence distribution (population
stability index over quantile bins of the stable window, corrected for sample size, and the
two-sample Kolmogorov-Smirnov statistic). A module without a distribution-like output has no confidences: those figures are
reported as not measured and do not decide. numpy only: the router must not pull in scipy.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Figure",
    "Tolerances",
    "Verdict",
    "Window",
    "compare",
    "drift_bins",
    "ks_statistic",
    "p99",
    "psi",
]

MAX_SAMPLES = 20_000
"""Samples a window keeps (the newest): bounds the router's memory whatever a step holds."""


@dataclass(frozen=True)
class Tolerances:
    """How much worse than stable a canary may be and still pass a step."""

    max_error_rate_increase: float = 0.01
    """Absolute: canary error rate - stable error rate."""
    max_p99_ratio: float = 1.5
    latency_grace_ms: float = 5.0
    """The canary's p99 may be up to ``stable p99 * max_p99_ratio + latency_grace_ms``."""
    max_confidence_drop: float = 0.05
    """Stable mean confidence - canary mean confidence."""
    max_confidence_psi: float = 0.2
    """Population stability index; 0.1-0.25 is the usual 'moderate shift' band."""
    max_confidence_ks: float = 0.3
    """Largest gap between the two empirical distribution functions of confidence."""
    min_samples: int = 100
    """Neither window is judged with fewer calls than this: with 100 calls each, two windows
    of one distribution pass every default tolerance (with 20, one time in five)."""


@dataclass
class Window:
    """One version's calls over a step: latency, outcome and confidence of each."""

    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    failures: deque[bool] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    confidences: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    def record(self, latency_ms: float, ok: bool, confidence: float | None = None) -> None:
        """One call: a failed call's latency counts too (a timeout is slow and failed)."""
        self.latencies_ms.append(latency_ms)
        self.failures.append(not ok)
        if ok and confidence is not None:
            self.confidences.append(confidence)

    @property
    def calls(self) -> int:
        """Calls recorded (at most :data:`MAX_SAMPLES`)."""
        return len(self.failures)

    @property
    def error_rate(self) -> float:
        """Share of failed calls; 0 for an empty window."""
        return sum(self.failures) / len(self.failures) if self.failures else 0.0

    def summary(self) -> dict[str, Any]:
        """Figures for status: calls, error rate, p99 and mean confidence."""
        conf = np.fromiter(self.confidences, float)
        return {
            "calls": self.calls,
            "errorRate": round(self.error_rate, 6),
            "p99Ms": round(p99(self.latencies_ms), 3) if self.latencies_ms else None,
            "confidenceMean": round(float(conf.mean()), 6) if conf.size else None,
        }


@dataclass(frozen=True)
class Figure:
    """One measured figure: both versions' values, the canary's limit, and whether it holds."""

    name: str
    stable: float | None
    canary: float | None
    limit: float | None
    passed: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON form for status and events."""
        return {
            "name": self.name,
            "stable": _round(self.stable),
            "canary": _round(self.canary),
            "limit": _round(self.limit),
            "passed": self.passed,
            **({"note": self.note} if self.note else {}),
        }


@dataclass(frozen=True)
class Verdict:
    """The outcome of one comparison: ``passed`` None while a window has too few calls."""

    passed: bool | None
    reason: str
    figures: list[Figure]

    def as_dict(self) -> dict[str, Any]:
        """JSON form for status and events."""
        return {
            "passed": self.passed,
            "reason": self.reason,
            "figures": [f.as_dict() for f in self.figures],
        }


def p99(values: Any) -> float:
    """99th percentile (linear interpolation, numpy's default)."""
    return float(np.percentile(np.fromiter(values, float), 99))


def psi(expected: Any, actual: Any, bins: int = 10, *, corrected: bool = False) -> float:
    """Population stability index of ``actual`` against ``expected``.

    Bins are the expected sample's quantiles (equal mass, so a skewed confidence distribution
    still gets informative bins); an empty bin counts as 0.5 observation (the usual Laplace
    guard, so one empty bin is a large but finite term). Values outside the expected range fall
    into the end bins.

    PSI of two samples of one distribution is not 0 but about ``(bins - 1) * (1/n + 1/m)``
    (it is a chi-square statistic scaled by that): 0.36 for 10 bins and windows of 30 and 150
    calls, above the usual 0.2 alarm. ``corrected`` subtracts that expectation (floored at 0),
    so the usual thresholds, set for large samples, mean the same for a step's window.
    """
    e = np.fromiter(expected, float)
    a = np.fromiter(actual, float)
    if e.size == 0 or a.size == 0:
        raise ValueError("psi needs two non-empty samples")
    edges = np.unique(np.quantile(e, np.linspace(0.0, 1.0, bins + 1))[1:-1])
    e_counts = np.bincount(np.searchsorted(edges, e, side="right"), minlength=edges.size + 1)
    a_counts = np.bincount(np.searchsorted(edges, a, side="right"), minlength=edges.size + 1)
    e_share = np.maximum(e_counts, 0.5) / e.size
    a_share = np.maximum(a_counts, 0.5) / a.size
    value = float(np.sum((a_share - e_share) * np.log(a_share / e_share)))
    if corrected:
        value = max(0.0, value - edges.size * (1.0 / e.size + 1.0 / a.size))
    return value


def drift_bins(first: int, second: int) -> int:
    """Bins for the PSI of two samples: about 20 calls of the smaller per bin, 2 to 10, so the
    sampling noise left after :func:`psi`'s correction stays well under the usual thresholds
    (a standard deviation of about 0.06 for windows of 30 and 150 calls)."""
    return max(2, min(10, min(first, second) // 20))


def ks_statistic(first: Any, second: Any) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical
    distribution functions (0: same sample, 1: disjoint ranges)."""
    x = np.sort(np.fromiter(first, float))
    y = np.sort(np.fromiter(second, float))
    if x.size == 0 or y.size == 0:
        raise ValueError("ks_statistic needs two non-empty samples")
    points = np.concatenate([x, y])
    cdf_x = np.searchsorted(x, points, side="right") / x.size
    cdf_y = np.searchsorted(y, points, side="right") / y.size
    return float(np.max(np.abs(cdf_x - cdf_y)))


def compare(stable: Window, canary: Window, tolerances: Tolerances) -> Verdict:
    """Judge ``canary`` against ``stable``: the first figure beyond its tolerance fails it."""
    need = tolerances.min_samples
    if stable.calls < need or canary.calls < need:
        return Verdict(
            None,
            f"waiting for calls: stable {stable.calls}, canary {canary.calls}, each needs {need}",
            [],
        )
    t = tolerances
    figures: list[Figure] = []
    s_err, c_err = stable.error_rate, canary.error_rate
    err_limit = s_err + t.max_error_rate_increase
    figures.append(Figure("errorRate", s_err, c_err, err_limit, c_err <= err_limit))
    s_p99, c_p99 = p99(stable.latencies_ms), p99(canary.latencies_ms)
    p99_limit = s_p99 * t.max_p99_ratio + t.latency_grace_ms
    figures.append(Figure("p99LatencyMs", s_p99, c_p99, p99_limit, c_p99 <= p99_limit))
    s_conf = np.fromiter(stable.confidences, float)
    c_conf = np.fromiter(canary.confidences, float)
    if min(s_conf.size, c_conf.size) < need:
        note = (
            f"not measured: confidences of stable {s_conf.size}, canary {c_conf.size}, "
            f"each needs {need}"
        )
        for name in ("confidenceMean", "confidencePsi", "confidenceKs"):
            figures.append(Figure(name, None, None, None, True, note))
    else:
        s_mean, c_mean = float(s_conf.mean()), float(c_conf.mean())
        mean_limit = s_mean - t.max_confidence_drop
        figures.append(Figure("confidenceMean", s_mean, c_mean, mean_limit, c_mean >= mean_limit))
        drift = psi(s_conf, c_conf, drift_bins(s_conf.size, c_conf.size), corrected=True)
        figures.append(
            Figure(
                "confidencePsi", None, drift, t.max_confidence_psi, drift <= t.max_confidence_psi
            )
        )
        ks = ks_statistic(s_conf, c_conf)
        figures.append(
            Figure("confidenceKs", None, ks, t.max_confidence_ks, ks <= t.max_confidence_ks)
        )
    failed = [f for f in figures if not f.passed]
    calls = f"(stable {stable.calls} calls, canary {canary.calls})"
    if not failed:
        return Verdict(True, f"every figure within its tolerance {calls}", figures)
    reason = "; ".join(_describe(f) for f in failed)
    return Verdict(False, f"{reason} {calls}", figures)


_WORDS = {
    "errorRate": ("error rate", "above"),
    "p99LatencyMs": ("p99 latency (ms)", "above"),
    "confidenceMean": ("mean confidence", "below"),
    "confidencePsi": ("confidence PSI", "above"),
    "confidenceKs": ("confidence KS statistic", "above"),
}


def _describe(figure: Figure) -> str:
    words, side = _WORDS[figure.name]
    text = f"{words} {_fmt(figure.canary)} is {side} its limit {_fmt(figure.limit)}"
    return text if figure.stable is None else f"{text} (stable {_fmt(figure.stable)})"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
