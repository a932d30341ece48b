"""The sidecar's live health state and the envelope derived from it.

Requests are recorded in O(1) (:class:`~modulemesh.sidecar.window.RollingWindow` plus
cumulative totals for Prometheus); the envelope is computed lazily, at most once per
``envelope_refresh`` seconds, and shared by every response header until it is refreshed, so
the per-request cost of publishing it is a cached bytes value. Confidence samples are kept as
raw response bodies and decoded only at refresh time, at most ``confidence_samples`` each time.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass

from modulemesh.envelope import HealthEnvelope, Latency, State
from modulemesh.sidecar.confidence import confidence_of
from modulemesh.sidecar.config import SidecarConfig, Thresholds
from modulemesh.sidecar.window import RollingWindow, WindowStats

__all__ = ["DURATION_BUCKETS", "Health", "RuntimeInfo", "Totals", "assess"]

DURATION_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
"""Upper bounds (seconds) of the cumulative request-duration histogram."""


@dataclass
class RuntimeInfo:
    """What the sidecar knows about its runtime, from polling and from response headers."""

    ready: bool | None = None
    """``None`` until the first poll answered or failed."""
    reason: str = "runtime not polled yet"
    queue_depth: int | None = None
    in_flight: int | None = None
    batch_fill: float | None = None
    mean_batch_size: float | None = None
    provider: str | None = None
    model_version: str | None = None


class Totals:
    """Cumulative counts since start (Prometheus counters and histogram)."""

    __slots__ = ("bucket_counts", "by_status", "decisions", "duration_sum", "errors")

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self.errors = 0
        self.bucket_counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.decisions: dict[str, int] = {}


def assess(
    stats: WindowStats, runtime: RuntimeInfo, thresholds: Thresholds, window: float = 60.0
) -> tuple[State, str]:
    """State and reason from the window's figures (over ``window`` seconds), the runtime's
    readiness and thresholds; a broken latency objective names its percentile and numbers."""
    if runtime.ready is None and stats.requests == 0:
        return State.UNKNOWN, runtime.reason
    if runtime.ready is False:
        return State.UNHEALTHY, runtime.reason
    if stats.requests == 0 or stats.error_rate is None:
        return State.HEALTHY, "no traffic in window; runtime ready"
    if stats.error_rate > thresholds.unhealthy_error_rate:
        return State.UNHEALTHY, (
            f"error rate {stats.error_rate:.1%} > {thresholds.unhealthy_error_rate:.0%}"
        )
    if stats.error_rate > thresholds.degraded_error_rate:
        return State.DEGRADED, (
            f"error rate {stats.error_rate:.1%} > {thresholds.degraded_error_rate:.0%}"
        )
    for name, value, limit in (
        ("p99", stats.p99, thresholds.degraded_p99_seconds),
        ("p95", stats.p95, thresholds.degraded_p95_seconds),
        ("p50", stats.p50, thresholds.degraded_p50_seconds),
    ):
        if limit is not None and value is not None and value > limit:
            return State.DEGRADED, (
                f"{name} latency {value * 1000:.1f} ms > objective {limit * 1000:.1f} ms "
                f"over the last {stats.requests} requests in {window:g} s"
            )
    depth = thresholds.degraded_queue_depth
    if depth is not None and runtime.queue_depth is not None and runtime.queue_depth > depth:
        return State.DEGRADED, f"queue depth {runtime.queue_depth} > {depth}"
    return State.HEALTHY, ""


class Health:
    """Live state of one module as seen by its sidecar."""

    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        self.window = RollingWindow(config.window_seconds)
        self.runtime = RuntimeInfo()
        self.totals = Totals()
        self.in_flight = 0
        self._pending: list[tuple[float, bytes, bytes | None]] = []
        self._envelope: HealthEnvelope | None = None
        self._header = b""
        self._expires = 0.0

    # -- recording (hot path) -----------------------------------------------------------------

    def record(self, latency: float, status: int, error: bool, *, in_window: bool = True) -> None:
        """One request that reached the runtime or failed trying (not guard denials).

        ``in_window=False``: counted in the totals only, not in the envelope's window (a
        request the client never sent whole must not make the module look slow)."""
        now = time.time()
        if in_window:
            self.window.record(now, latency, error)
        totals = self.totals
        totals.by_status[status] = totals.by_status.get(status, 0) + 1
        if error:
            totals.errors += 1
        totals.bucket_counts[bisect.bisect_left(DURATION_BUCKETS, latency)] += 1
        totals.duration_sum += latency

    def record_decision(self, decision: str, denied: bool) -> None:
        """One guard decision (``allow``, ``deny``, ``dryrun-deny``)."""
        decisions = self.totals.decisions
        decisions[decision] = decisions.get(decision, 0) + 1
        if denied:
            self.window.record_denial(time.time())

    def offer_confidence(self, body: bytes, header_length: bytes | None) -> None:
        """Keep a response body for a confidence sample, if this refresh still wants one."""
        if len(self._pending) < self.config.confidence_samples:
            self._pending.append((time.time(), body, header_length))

    @property
    def wants_confidence(self) -> bool:
        """Whether a response body offered now would be sampled."""
        return len(self._pending) < self.config.confidence_samples

    def note_headers(self, queue_depth: bytes | None, provider: bytes | None,
                     version: bytes | None) -> None:  # fmt: skip
        """Runtime facts carried on a response (cheap: a few attribute writes)."""
        runtime = self.runtime
        if queue_depth is not None and queue_depth.isdigit():
            runtime.queue_depth = int(queue_depth)
        if provider is not None:
            runtime.provider = provider.decode("latin-1")
        if version is not None:
            runtime.model_version = version.decode("latin-1")

    # -- envelope -----------------------------------------------------------------------------

    def header(self) -> bytes:
        """The compact envelope for response headers, at most ``envelope_refresh`` old."""
        if time.monotonic() >= self._expires:
            self.envelope(force=True)
        return self._header

    def envelope(self, *, force: bool = False) -> HealthEnvelope:
        """The current envelope; recomputed when stale or when ``force`` is set."""
        if self._envelope is not None and not force and time.monotonic() < self._expires:
            return self._envelope
        now = time.time()
        self._drain_confidence()
        stats = self.window.snapshot(now)
        state, reason = assess(stats, self.runtime, self.config.thresholds, self.window.seconds)
        runtime = self.runtime
        envelope = HealthEnvelope(
            module=self.config.module,
            state=state,
            reason=reason,
            model_version=self.config.model_version or runtime.model_version,
            provider=runtime.provider,
            window_seconds=self.window.seconds,
            request_rate=round(stats.request_rate, 4),
            latency=Latency(p50=_round(stats.p50), p95=_round(stats.p95), p99=_round(stats.p99)),
            error_rate=None if stats.error_rate is None else round(stats.error_rate, 4),
            queue_depth=runtime.queue_depth,
            in_flight=self.in_flight,
            batch_fill=runtime.batch_fill,
            mean_batch_size=runtime.mean_batch_size,
            confidence=None if stats.confidence is None else round(stats.confidence, 4),
            denials=stats.denials,
            requests=stats.requests,
            errors=stats.errors,
            timestamp=round(now, 3),
        )
        self._envelope = envelope
        self._header = envelope.to_header().encode("latin-1")
        self._expires = time.monotonic() + self.config.envelope_refresh
        return envelope

    def _drain_confidence(self) -> None:
        pending, self._pending = self._pending, []
        output = self.config.confidence_output
        for when, body, header_length in pending:
            found = confidence_of(body, header_length, output)
            if found is not None:
                self.window.record_confidence(when, found[0], found[1])


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)
