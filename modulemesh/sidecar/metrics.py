"""Publishing the sidecar's figures: Prometheus text (``/metrics``) and OpenTelemetry metrics.

prometheus_client is used (rather than opentelemetry-exporter-prometheus, not installed) with a
custom collector: every value is read from the sidecar's own state at scrape time, so the hot
path pays nothing for Prometheus. Names follow the OpenTelemetry conventions translated to
Prometheus: units in the name (``_seconds``), counters get ``_total`` only in the exposition.
The same figures are observable OpenTelemetry instruments (``modulemesh.requests``,
``modulemesh.envelope.*``), exported over OTLP when an endpoint is configured.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from modulemesh.envelope import State
from modulemesh.sidecar.health import DURATION_BUCKETS, Health

__all__ = ["SidecarCollector", "register_otel", "registry_for"]


class SidecarCollector(Collector):
    """Prometheus collector over one sidecar's :class:`Health`."""

    def __init__(self, health: Health) -> None:
        self._health = health

    def collect(self) -> Iterable[Metric]:
        health = self._health
        module = health.config.module
        totals = health.totals
        labels = ["module"]
        duration = HistogramMetricFamily(
            "modulemesh_request_duration_seconds",
            "Duration of requests proxied to the runtime, in seconds.",
            labels=labels,
        )
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(
            (*DURATION_BUCKETS, float("inf")), totals.bucket_counts, strict=True
        ):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        duration.add_metric([module], buckets, totals.duration_sum)
        yield duration

        requests = CounterMetricFamily(
            "modulemesh_requests",
            "Requests proxied to the runtime, by HTTP status code.",
            labels=["module", "http_response_status_code"],
        )
        for status, count in sorted(totals.by_status.items()):
            requests.add_metric([module, str(status)], count)
        yield requests
        yield CounterMetricFamily(
            "modulemesh_request_errors",
            "Requests that failed: 5xx, timeouts, runtime unreachable (not client 4xx).",
            value=totals.errors,
            labels=None,
        )
        decisions = CounterMetricFamily(
            "modulemesh_compliance_decisions",
            "Compliance guard decisions on tagged requests.",
            labels=["module", "decision"],
        )
        for decision, count in sorted(totals.decisions.items()):
            decisions.add_metric([module, decision], count)
        yield decisions
        yield from _envelope_gauges(health)


def _gauge(name: str, doc: str, module: str, value: float | None) -> Iterator[Metric]:
    if value is None:
        return
    family = GaugeMetricFamily(name, doc, labels=["module"])
    family.add_metric([module], value)
    yield family


def _envelope_gauges(health: Health) -> Iterator[Metric]:
    env = health.envelope()
    m = env.module
    yield from _gauge(
        "modulemesh_envelope_request_rate",
        "Requests per second over the window.",
        m,
        env.request_rate,
    )
    latency = GaugeMetricFamily(
        "modulemesh_envelope_latency_seconds",
        "Latency percentiles over the window, in seconds.",
        labels=["module", "quantile"],
    )
    for q, value in (
        ("0.5", env.latency.p50),
        ("0.95", env.latency.p95),
        ("0.99", env.latency.p99),
    ):
        if value is not None:
            latency.add_metric([m, q], value)
    yield latency
    yield from _gauge(
        "modulemesh_envelope_error_rate", "Error fraction over the window.", m, env.error_rate
    )
    yield from _gauge(
        "modulemesh_envelope_queue_depth", "Runtime batch-queue depth.", m, env.queue_depth
    )
    yield from _gauge(
        "modulemesh_envelope_in_flight", "Requests in flight through the sidecar.", m, env.in_flight
    )
    yield from _gauge(
        "modulemesh_envelope_batch_fill", "Mean rows per batch / max batch size.", m, env.batch_fill
    )
    yield from _gauge(
        "modulemesh_envelope_mean_batch_size",
        "Achieved batch size: mean rows per model call over the runtime's last 100 batches.",
        m,
        env.mean_batch_size,
    )
    yield from _gauge(
        "modulemesh_envelope_confidence", "Mean max probability over the window.", m, env.confidence
    )
    yield from _gauge(
        "modulemesh_envelope_denials", "Compliance denials over the window.", m, env.denials
    )
    yield from _gauge(
        "modulemesh_envelope_timestamp_seconds",
        "When the envelope was computed (Unix time).",
        m,
        env.timestamp,
    )
    state = GaugeMetricFamily(
        "modulemesh_envelope_state", "1 for the module's current state.", labels=["module", "state"]
    )
    for candidate in State:
        state.add_metric([m, candidate.value], 1.0 if candidate is env.state else 0.0)
    yield state
    ready = health.runtime.ready
    yield from _gauge("modulemesh_runtime_ready", "1 when the runtime reports ready.", m, 1.0 if ready else 0.0)  # fmt: skip


def registry_for(health: Health) -> CollectorRegistry:
    """A registry holding only this sidecar's collector (no process/GC noise)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SidecarCollector(health))
    return registry


def register_otel(meter: Meter, health: Health) -> None:
    """Observable OpenTelemetry instruments over ``health`` (read at export time only)."""
    module = health.config.module

    def requests(_: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"modulemesh.module": module, "http.response.status_code": status})
            for status, count in health.totals.by_status.items()
        ]

    def errors(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(health.totals.errors, {"modulemesh.module": module})]

    meter.create_observable_counter(
        "modulemesh.requests", [requests], unit="{request}", description="Requests proxied."
    )
    meter.create_observable_counter(
        "modulemesh.request.errors", [errors], unit="{request}", description="Failed requests."
    )

    def gauge(name: str, unit: str, read: str) -> None:
        def callback(_: CallbackOptions) -> Iterable[Observation]:
            value = _read(health, read)
            return [] if value is None else [Observation(value, {"modulemesh.module": module})]

        meter.create_observable_gauge(f"modulemesh.envelope.{name}", [callback], unit=unit)

    gauge("request_rate", "{request}/s", "request_rate")
    gauge("latency.p50", "s", "p50")
    gauge("latency.p95", "s", "p95")
    gauge("latency.p99", "s", "p99")
    gauge("error_rate", "1", "error_rate")
    gauge("queue_depth", "{request}", "queue_depth")
    gauge("in_flight", "{request}", "in_flight")
    gauge("batch_fill", "1", "batch_fill")
    gauge("mean_batch_size", "{row}", "mean_batch_size")
    gauge("confidence", "1", "confidence")
    gauge("denials", "{request}", "denials")


def _read(health: Health, field: str) -> float | None:
    env = health.envelope()
    if field in ("p50", "p95", "p99"):
        value: float | int | None = getattr(env.latency, field)
    else:
        value = getattr(env, field)
    return None if value is None else float(value)
