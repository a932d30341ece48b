"""A minimal OTLP/HTTP receiver for tests: what a collector would get from our processes.

:class:`OtlpReceiver` listens on ``127.0.0.1`` (ephemeral port) in a background thread and
accepts ``POST /v1/metrics``, ``/v1/traces`` and ``/v1/logs`` with protobuf bodies (optionally gzip or
deflate ``Content-Encoding``), answering ``200`` with an empty export response, as a collector
does. Every decoded request is kept, with its raw (decompressed) body, so tests can read back
metric points and spans and check what never went out. Anything else (another path or
content type, an undecodable body) gets a 4xx and is recorded in :attr:`OtlpReceiver.errors`.

Use it as a context manager and give :meth:`OtlpReceiver.env` to the child processes::

    with OtlpReceiver() as rx, module(tmp, model, "clf", env=rx.env()) as mod:
        ...
        rx.wait_for(lambda: "modulemesh.requests" in rx.metric_names(), timeout=10)
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["OtlpReceiver", "ReceivedMetric", "ReceivedSpan", "attributes", "value_of"]

_PROTOBUF = "application/x-protobuf"
_MAX_BODY = 32 * 1024 * 1024


def value_of(value: AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue`` (arrays as lists, kvlists as dicts)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(pairs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    """OTLP ``KeyValue`` list as a dict."""
    return {kv.key: value_of(kv.value) for kv in pairs}


@dataclass(frozen=True)
class ReceivedMetric:
    """One metric of one export request, with the resource and scope it came under."""

    resource: dict[str, Any]
    scope: str
    metric: Metric
    received: float
    """``time.monotonic()`` when the request arrived."""

    @property
    def name(self) -> str:
        return self.metric.name

    def points(self) -> list[tuple[dict[str, Any], float]]:
        """``(attributes, value)`` per data point; histograms give their ``count``."""
        kind = self.metric.WhichOneof("data")
        if kind in ("sum", "gauge"):
            out: list[tuple[dict[str, Any], float]] = []
            for p in getattr(self.metric, kind).data_points:
                number = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                out.append((attributes(p.attributes), float(number)))
            return out
        if kind in ("histogram", "exponential_histogram"):
            return [
                (attributes(p.attributes), float(p.count))
                for p in getattr(self.metric, kind).data_points
            ]
        return []  # summary: not produced by the OpenTelemetry SDK

    def value(self, **match: Any) -> float | None:
        """Sum of the points whose attributes include ``match`` (``None`` if there are none).

        Attribute keys with dots are passed as ``**{"modulemesh.module": "clf"}``.
        """
        found = [
            v for attrs, v in self.points() if all(attrs.get(k) == w for k, w in match.items())
        ]
        return sum(found) if found else None


@dataclass(frozen=True)
class ReceivedSpan:
    """One span of one export request, with the resource it came under."""

    resource: dict[str, Any]
    scope: str
    span: Span

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        """Hex parent span id, ``""`` for a root span."""
        return self.span.parent_span_id.hex()

    @property
    def kind(self) -> int:
        """``Span.SpanKind`` value, e.g. ``Span.SPAN_KIND_SERVER``."""
        return int(self.span.kind)

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)

    @property
    def service(self) -> str | None:
        name = self.resource.get("service.name")
        return None if name is None else str(name)

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return [(e.name, attributes(e.attributes)) for e in self.span.events]


class OtlpReceiver:
    """OTLP/HTTP (protobuf) receiver on 127.0.0.1 in a background thread; a context manager."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.metric_requests: list[tuple[float, ExportMetricsServiceRequest]] = []
        self.trace_requests: list[tuple[float, ExportTraceServiceRequest]] = []
        self.log_requests: list[ExportLogsServiceRequest] = []
        self.raw_bodies: list[bytes] = []
        """Every accepted request body, decompressed (to check what never went out)."""
        self.encodings: Counter[str] = Counter()
        """``Content-Encoding`` of the accepted requests (``identity`` when there was none)."""
        self.errors: list[str] = []
        """Requests refused (unknown path, content type or encoding, undecodable body)."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """Base URL, for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporters add ``/v1/...``)."""
        return f"http://127.0.0.1:{self.port}"

    def env(
        self, *, metric_interval_ms: int = 500, span_delay_ms: int = 100, **extra: str
    ) -> dict[str, str]:
        """Environment making an SDK process export both signals here, promptly (the
        signal-specific endpoints are set too, so an ambient one cannot take precedence)."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{self.endpoint}/v1/traces",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{self.endpoint}/v1/metrics",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"{self.endpoint}/v1/logs",
            "OTEL_BLRP_SCHEDULE_DELAY": str(span_delay_ms),
            "OTEL_SDK_DISABLED": "false",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "5",
            "OTEL_METRIC_EXPORT_INTERVAL": str(metric_interval_ms),
            "OTEL_BSP_SCHEDULE_DELAY": str(span_delay_ms),
            **extra,
        }

    def start(self) -> OtlpReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"otlp-receiver-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, close the socket and join the thread (idempotent)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- recording (handler threads) ------------------------------------------------------------

    def _record(self, path: str, body: bytes, encoding: str) -> bytes:
        """Decode and keep one request; returns the serialized response (raises on bad data)."""
        if path == "/v1/logs":
            logs = ExportLogsServiceRequest()
            logs.ParseFromString(body)
            with self._cond:
                self.log_requests.append(logs)
                self.raw_bodies.append(body)
                self.encodings[encoding] += 1
                self._cond.notify_all()
            logs_answer: bytes = ExportLogsServiceResponse().SerializeToString()
            return logs_answer
        metrics = path == "/v1/metrics"
        request = ExportMetricsServiceRequest() if metrics else ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self._cond:
            if isinstance(request, ExportMetricsServiceRequest):
                self.metric_requests.append((time.monotonic(), request))
            else:
                self.trace_requests.append((time.monotonic(), request))
            self.raw_bodies.append(body)
            self.encodings[encoding] += 1
            self._cond.notify_all()
        response = ExportMetricsServiceResponse() if metrics else ExportTraceServiceResponse()
        answer: bytes = response.SerializeToString()
        return answer

    def _error(self, message: str) -> None:
        with self._cond:
            self.errors.append(message)
            self._cond.notify_all()

    # -- reading --------------------------------------------------------------------------------

    def metrics(self, name: str | None = None) -> list[ReceivedMetric]:
        """Every metric received (oldest first), or those named ``name``."""
        with self._cond:
            requests = list(self.metric_requests)
        out = []
        for received, request in requests:
            for rm in request.resource_metrics:
                resource = attributes(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if name is None or metric.name == name:
                            out.append(ReceivedMetric(resource, sm.scope.name, metric, received))
        return out

    def latest(self, name: str) -> ReceivedMetric | None:
        """The most recently received ``name`` (cumulative metrics: the current totals)."""
        found = self.metrics(name)
        return found[-1] if found else None

    def metric_names(self) -> set[str]:
        return {m.name for m in self.metrics()}

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        """Every span received (in arrival order), or those of one trace (32 hex digits)."""
        with self._cond:
            requests = list(self.trace_requests)
        out = []
        for _, request in requests:
            for rs in request.resource_spans:
                resource = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        received = ReceivedSpan(resource, ss.scope.name, span)
                        if trace_id is None or received.trace_id == trace_id:
                            out.append(received)
        return out

    def log_records(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every log record received: (scope name, body as text, attributes)."""
        with self._cond:
            requests = list(self.log_requests)
        return [
            (sl.scope.name, str(value_of(record.body)), attributes(record.attributes))
            for request in requests
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for record in sl.log_records
        ]

    def wait_for(
        self, predicate: Callable[[], object], timeout: float = 10.0, what: str = ""
    ) -> None:
        """Wait until ``predicate()`` is truthy (re-checked on every request received and at
        least every 0.1 s); fails the test after ``timeout`` seconds, saying what arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate():
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
        names = sorted(self.metric_names())
        spans = sorted({s.name for s in self.spans()})
        raise AssertionError(
            f"OTLP receiver: {what or 'condition'} not met within {timeout}s; received "
            f"{len(self.metric_requests)} metric and {len(self.trace_requests)} trace "
            f"requests; metrics {names}; spans {spans}; errors {self.errors}"
        )


def _handler_for(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the exporters' sessions expect

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit() or int(length) > _MAX_BODY:
                self.close_connection = True  # the body was not read: the stream is lost
                self._refuse(411, f"{path}: bad or missing Content-Length {length!r}")
                return
            body = self.rfile.read(int(length))
            if path not in ("/v1/metrics", "/v1/traces", "/v1/logs"):
                self._refuse(404, f"POST to unknown path {path}")
                return
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if content_type != _PROTOBUF:
                self._refuse(415, f"{path}: content type {content_type!r} is not {_PROTOBUF}")
                return
            encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
            try:
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding != "identity":
                    self._refuse(415, f"{path}: unsupported content encoding {encoding!r}")
                    return
                answer = receiver._record(path, body, encoding)
            except Exception as exc:  # undecodable: tell the exporter, keep the reason
                self._refuse(400, f"{path}: cannot decode body: {exc!r}")
                return
            self._send(200, answer, _PROTOBUF)

        def do_GET(self) -> None:
            self._refuse(405, f"GET {self.path}: OTLP/HTTP takes POST")

        def _refuse(self, status: int, message: str) -> None:
            receiver._error(message)
            self._send(status, message.encode(), "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: failures are kept in receiver.errors

    return Handler
