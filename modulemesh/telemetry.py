"""OpenTelemetry set-up shared by every ModuleMesh process, plus W3C trace-context helpers.

:func:`setup` installs tracer and meter providers once per process. Spans and metrics are
exported over OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the signal-specific
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``..._METRICS_ENDPOINT``) is set; otherwise the
providers exist but export nothing, and :attr:`Telemetry.tracing` tells hot paths they may skip
creating spans and just forward ``traceparent`` as-is (propagation still works, for free).
Privacy audit records are exported as OTLP logs when a logs (or the general) endpoint is set.
"""

from __future__ import annotations

import atexit
import os
import random
import re
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "Telemetry",
    "current_trace_id",
    "extract",
    "inject",
    "new_traceparent",
    "otlp_enabled",
    "setup",
    "trace_id_from_traceparent",
]

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACEPARENT = re.compile(
    r"(?!ff)([0-9a-f]{2})-(?!0{32})([0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(-[^,]*)?"
)
"""W3C ``traceparent``: version ``ff`` and all-zero ids are invalid, version ``00`` has nothing
after the flags, and a comma means several field lines were joined (RFC 9110), which is not
one trace context."""
_state: Telemetry | None = None


@dataclass(frozen=True)
class Telemetry:
    """What :func:`setup` installed: a tracer, a meter and whether anything is exported."""

    tracer: Tracer
    meter: Meter
    tracing: bool
    """True when spans are exported, i.e. worth creating on a hot path."""
    metrics_exported: bool


def otlp_enabled(signal: str) -> bool:
    """Whether an OTLP endpoint is configured for ``signal`` (``traces``, ``metrics``,
    ``logs``)."""
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    )


def setup(service_name: str, *, component: str = "") -> Telemetry:
    """Install tracer/meter providers for this process (idempotent; the first call wins).

    ``service_name`` becomes the ``service.name`` resource attribute unless ``OTEL_SERVICE_NAME``
    overrides it; ``component`` (``sidecar``, ``router``, ...) is ``modulemesh.component``.
    """
    global _state
    if _state is not None:
        return _state
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", service_name),
            "modulemesh.component": component or service_name,
        }
    )
    tracing = otlp_enabled("traces")
    tracer_provider = TracerProvider(resource=resource)
    if tracing:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)

    metrics_exported = otlp_enabled("metrics")
    readers: list[MetricReader] = []
    if metrics_exported:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    if otlp_enabled("logs"):
        _export_audit_logs(resource)

    _state = Telemetry(
        tracer=trace.get_tracer("modulemesh"),
        meter=metrics.get_meter("modulemesh"),
        tracing=tracing,
        metrics_exported=metrics_exported,
    )
    return _state


def _export_audit_logs(resource: Any) -> None:
    """Audit records (the ``modulemesh.audit`` logger) also go out as OpenTelemetry log
    records, their body the sealed JSON line, so a collector keeps a copy of the chain
    off the node. Component logs stay on stderr."""
    import logging

    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    from modulemesh.audit import LOGGER_NAME

    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    audit_logger = logging.getLogger(LOGGER_NAME)
    audit_logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=provider))
    audit_logger.setLevel(logging.INFO)
    atexit.register(provider.shutdown)


def extract(headers: Mapping[str, str]) -> otel_context.Context:
    """OpenTelemetry context from W3C ``traceparent``/``tracestate`` headers (lower-case keys)."""
    return _PROPAGATOR.extract(headers)


def inject(carrier: MutableMapping[str, str], ctx: otel_context.Context | None = None) -> None:
    """Write ``traceparent``/``tracestate`` for ``ctx`` (default: the current span) into carrier."""
    _PROPAGATOR.inject(carrier, context=ctx)


def trace_id_from_traceparent(value: str | bytes | None) -> str | None:
    """The 32-hex trace id of a ``traceparent`` value, or ``None``; cheap, never raises."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    match = _TRACEPARENT.fullmatch(value.strip().lower())
    if match is None or (match.group(1) == "00" and match.group(3) is not None):
        return None
    return match.group(2)


def new_traceparent() -> str:
    """A fresh W3C ``traceparent`` (random ids, not sampled) for a request that arrived
    without a valid one, so its audit records and the modules it reaches share a trace id."""
    trace_id = random.getrandbits(128) or 1
    span_id = random.getrandbits(64) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-00"


def current_trace_id(fallback_headers: Iterable[tuple[bytes, bytes]] = ()) -> str | None:
    """Trace id of the current span, else of a ``traceparent`` among raw ASGI-style headers."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return f"{span_context.trace_id:032x}"
    for name, value in fallback_headers:
        if name == b"traceparent":
            return trace_id_from_traceparent(value)
    return None


def setup_logging(level: str) -> None:
    """Component logs to stderr as ``time LEVEL logger: message``; audit records as bare JSON
    lines (one per privacy decision, so log pipelines can parse them without a prefix)."""
    import logging
    import sys

    from modulemesh.audit import LOGGER_NAME

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    audit_handler = logging.StreamHandler(sys.stderr)
    audit_handler.setFormatter(logging.Formatter("%(message)s"))
    audit_logger = logging.getLogger(LOGGER_NAME)
    audit_logger.addHandler(audit_handler)
    audit_logger.setLevel(logging.INFO)
    audit_logger.propagate = False
