"""OpenTelemetry outputs: the sidecar's observable metrics and the audit record's span event and
counter, read back with the SDK's in-memory reader and exporter."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from modulemesh import audit
from modulemesh.audit import Decision
from modulemesh.sidecar.config import SidecarConfig
from modulemesh.sidecar.health import Health
from modulemesh.sidecar.metrics import register_otel
from modulemesh.telemetry import trace_id_from_traceparent


def test_observable_metrics_follow_the_envelope() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    health = Health(SidecarConfig(module="clf"))
    health.runtime.ready = True
    register_otel(meter, health)
    for _ in range(3):
        health.record(0.002, 200, error=False)
    health.record(0.004, 503, error=True)
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        metric.name: list(metric.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    by_status = {
        p.attributes["http.response.status_code"]: p.value for p in points["modulemesh.requests"]
    }
    assert by_status == {200: 3, 503: 1}
    assert points["modulemesh.request.errors"][0].value == 1
    assert points["modulemesh.envelope.error_rate"][0].value == pytest.approx(0.25)
    assert points["modulemesh.envelope.latency.p50"][0].value == pytest.approx(0.002, rel=0.02)


def test_audit_record_is_a_log_line_a_span_event_and_a_counter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with (
        caplog.at_level(logging.INFO, logger=audit.LOGGER_NAME),
        tracer.start_as_current_span("req") as span,
    ):
        record = audit.emit(
            component="router", module="clf", tags={"pii"}, decision=Decision.DENY, reason="nope"
        )
        trace_id = f"{span.get_span_context().trace_id:032x}"
    assert record.trace_id == trace_id
    line = json.loads(caplog.records[-1].getMessage())
    assert line["decision"] == "deny" and line["traceId"] == trace_id and line["tags"] == ["pii"]
    assert set(line) == {
        "kind",
        "time",
        "component",
        "module",
        "tags",
        "decision",
        "reason",
        "traceId",
        "graph",
        "gate",
        "detectors",
        "chain",
        "seq",
        "prev",
        "mac",
    }
    (finished,) = exporter.get_finished_spans()
    (event,) = finished.events
    assert event.name == "modulemesh.audit"
    assert event.attributes is not None and event.attributes["modulemesh.decision"] == "deny"


def test_traceparent_parsing_is_strict_and_never_raises() -> None:
    assert trace_id_from_traceparent(
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ) == ("4bf92f3577b34da6a3ce929d0e0e4736")
    for bad in (None, "", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", b"\xff"):
        assert trace_id_from_traceparent(bad) is None
