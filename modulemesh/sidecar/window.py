"""Rolling-window request statistics with O(1) recording and no sorting of samples.

The window is a ring of 60 time slots. Each slot counts requests, errors, denials and
confidence samples, and keeps a sparse log-bucketed latency histogram (bucket width 2 %, so a
percentile is within 1 % of the true sample value). A snapshot merges the live slots' histograms,
a few dozen buckets each, however many requests there were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["GAMMA", "RollingWindow", "WindowStats"]

GAMMA = 1.02
"""Ratio between consecutive latency bucket bounds."""
_INV_LOG_GAMMA = 1.0 / math.log(GAMMA)
_MIN_LATENCY = 1e-6
SLOTS = 60


class _Slot:
    __slots__ = ("conf_rows", "conf_sum", "count", "denials", "errors", "hist", "index")

    def __init__(self) -> None:
        self.index = -1
        self.count = 0
        self.errors = 0
        self.denials = 0
        self.conf_sum = 0.0
        self.conf_rows = 0
        self.hist: dict[int, int] = {}

    def reset(self, index: int) -> None:
        self.index = index
        self.count = 0
        self.errors = 0
        self.denials = 0
        self.conf_sum = 0.0
        self.conf_rows = 0
        self.hist = {}


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Aggregates over the window; latencies in seconds, ``None`` without samples."""

    requests: int
    errors: int
    denials: int
    request_rate: float
    error_rate: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    confidence: float | None


class RollingWindow:
    """Counts over the last ``seconds`` seconds, in :data:`SLOTS` slots of ``seconds/60``."""

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("window must be positive")
        self.seconds = float(seconds)
        self._width = self.seconds / SLOTS
        self._slots = [_Slot() for _ in range(SLOTS)]

    def _slot(self, now: float) -> _Slot:
        index = int(now / self._width)
        slot = self._slots[index % SLOTS]
        if slot.index != index:
            slot.reset(index)
        return slot

    def record(self, now: float, latency: float, error: bool) -> None:
        """One request that reached the runtime (or failed trying), ending at ``now``."""
        slot = self._slot(now)
        slot.count += 1
        if error:
            slot.errors += 1
        bucket = math.floor(math.log(max(latency, _MIN_LATENCY)) * _INV_LOG_GAMMA)
        hist = slot.hist
        hist[bucket] = hist.get(bucket, 0) + 1

    def record_denial(self, now: float) -> None:
        """One request the guard denied (or would have, in dry-run)."""
        self._slot(now).denials += 1

    def record_confidence(self, when: float, total: float, rows: int) -> None:
        """``rows`` confidence values summing to ``total`` from a response sent at ``when``."""
        index = int(when / self._width)
        slot = self._slots[index % SLOTS]
        if slot.index != index:
            if slot.index > index:
                return  # too old: the slot was reused for a newer period
            slot.reset(index)
        slot.conf_sum += total
        slot.conf_rows += rows

    def snapshot(self, now: float) -> WindowStats:
        """Aggregate the slots inside ``(now - seconds, now]``."""
        newest = int(now / self._width)
        oldest = newest - SLOTS + 1
        requests = errors = denials = conf_rows = 0
        conf_sum = 0.0
        merged: dict[int, int] = {}
        for slot in self._slots:
            if not oldest <= slot.index <= newest:
                continue
            requests += slot.count
            errors += slot.errors
            denials += slot.denials
            conf_sum += slot.conf_sum
            conf_rows += slot.conf_rows
            for bucket, count in slot.hist.items():
                merged[bucket] = merged.get(bucket, 0) + count
        p50 = p95 = p99 = None
        if requests:
            p50, p95, p99 = _percentiles(merged, requests, (0.50, 0.95, 0.99))
        return WindowStats(
            requests=requests,
            errors=errors,
            denials=denials,
            request_rate=requests / self.seconds,
            error_rate=(errors / requests) if requests else None,
            p50=p50,
            p95=p95,
            p99=p99,
            confidence=(conf_sum / conf_rows) if conf_rows else None,
        )


def _percentiles(
    hist: dict[int, int], total: int, quantiles: tuple[float, float, float]
) -> tuple[float, float, float]:
    """Nearest-rank percentiles from a bucket histogram; each bucket reports its midpoint."""
    ranks = [max(1, math.ceil(q * total)) for q in quantiles]
    out: list[float] = []
    seen = 0
    wanted = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        while wanted < len(ranks) and seen >= ranks[wanted]:
            out.append(GAMMA ** (bucket + 0.5))
            wanted += 1
        if wanted == len(ranks):
            break
    while len(out) < len(ranks):  # pragma: no cover - ranks never exceed total
        out.append(out[-1] if out else 0.0)
    return out[0], out[1], out[2]
