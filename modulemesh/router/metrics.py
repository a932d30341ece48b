"""Router metrics per graph and module, in a registry of their own (served at ``/metrics``).

Label children are resolved once per (module, outcome), so counting a call is a dict lookup
and an increment, not a label resolution. :func:`register_otel` publishes the same counters
and the in-flight gauge as observable OpenTelemetry instruments, read from this registry at
export time (so the hot path counts once). Latency distributions cannot be observed that way
(OpenTelemetry has no asynchronous histogram), so when metrics are exported the two latency
histograms are also recorded into OpenTelemetry histograms with the same bucket bounds; when
they are not, the hot path pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.metrics import Histogram as OtelHistogram
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["BUCKETS", "RouterMetrics", "register_otel"]

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Latency histogram bucket bounds in seconds, on ``/metrics`` and over OTLP alike."""


class RouterMetrics:
    """Counters and histograms for one graph's router."""

    def __init__(self, graph: str) -> None:
        self.graph = graph
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "modulemesh_router_requests", "Graph requests by HTTP status.",
            ["graph", "code"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "modulemesh_router_request_seconds", "Graph request latency.",
            ["graph"], buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.calls = Counter(
            "modulemesh_router_module_calls", "Module calls by outcome (ok, error, timeout).",
            ["graph", "module", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.call_latency = Histogram(
            "modulemesh_router_module_call_seconds", "Module call latency.",
            ["graph", "module"], buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.fallbacks = Counter(
            "modulemesh_router_fallbacks", "Calls sent to a declared fallback, by reason kind.",
            ["graph", "module", "to", "reason"], registry=self.registry,
        )  # fmt: skip
        self.cache = Counter(
            "modulemesh_router_cache", "Result cache lookups (hit, miss).",
            ["graph", "result"], registry=self.registry,
        )  # fmt: skip
        self.shed = Counter(
            "modulemesh_router_shed", "Requests refused with 429 by priority.",
            ["graph", "priority"], registry=self.registry,
        )  # fmt: skip
        self.forwarded = Counter(
            "modulemesh_router_forwarded",
            "Bodies passed on without tensor decoding: the client's tensors to a module "
            "(part=request) or a module's answer to the client (part=answer).",
            ["graph", "part"], registry=self.registry,
        )  # fmt: skip
        self.forwarded_request = self.forwarded.labels(graph, "request")
        self.forwarded_answer = self.forwarded.labels(graph, "answer")
        self.in_flight = Gauge(
            "modulemesh_router_in_flight", "Graph requests in flight.",
            ["graph"], registry=self.registry,
        )  # fmt: skip
        self._latency = self.latency.labels(graph)
        self._codes: dict[int, Counter] = {}
        self._calls: dict[tuple[str, str], Counter] = {}
        self._call_latency: dict[str, Histogram] = {}
        # Set by register_otel(record_latency=True); attribute dicts are built once per label set.
        self.otel_latency: OtelHistogram | None = None
        self.otel_call_latency: OtelHistogram | None = None
        self._otel_attributes: dict[object, dict[str, str]] = {}

    def request(self, status: int, seconds: float) -> None:
        """Count one graph request."""
        child = self._codes.get(status)
        if child is None:
            child = self._codes[status] = self.requests.labels(self.graph, str(status))
        child.inc()
        self._latency.observe(seconds)
        if self.otel_latency is not None:
            self.otel_latency.record(seconds, self._attributes(status))

    def call(self, module: str, outcome: str, seconds: float) -> None:
        """Count one module call."""
        key = (module, outcome)
        child = self._calls.get(key)
        if child is None:
            child = self._calls[key] = self.calls.labels(self.graph, module, outcome)
        child.inc()
        hist = self._call_latency.get(module)
        if hist is None:
            hist = self._call_latency[module] = self.call_latency.labels(self.graph, module)
        hist.observe(seconds)
        if self.otel_call_latency is not None:
            self.otel_call_latency.record(seconds, self._attributes(key))

    def _attributes(self, key: int | tuple[str, str]) -> dict[str, str]:
        """OpenTelemetry attributes of a request's status or a call's (module, outcome)."""
        found = self._otel_attributes.get(key)
        if found is None:
            if isinstance(key, int):
                found = {"graph": self.graph, "http.response.status_code": str(key)}
            else:
                found = {"graph": self.graph, "module": key[0], "outcome": key[1]}
            self._otel_attributes[key] = found
        return found


# RouterMetrics counter -> (OpenTelemetry name, unit, description); label ``code`` is exported
# as ``http.response.status_code``, the others under their own names.
_OTEL_COUNTERS = {
    "requests": ("modulemesh.router.requests", "{request}", "Graph requests by HTTP status."),
    "calls": ("modulemesh.router.module_calls", "{call}",
              "Module calls by outcome (ok, error, timeout)."),
    "fallbacks": ("modulemesh.router.fallbacks", "{call}",
                  "Calls sent to a declared fallback, by reason kind."),
    "cache": ("modulemesh.router.cache", "{lookup}", "Result cache lookups (hit, miss)."),
    "shed": ("modulemesh.router.shed", "{request}", "Requests refused with 429 by priority."),
    "forwarded": ("modulemesh.router.forwarded", "{body}",
                  "Bodies passed on without tensor decoding."),
}  # fmt: skip
_ATTRIBUTE = {"code": "http.response.status_code"}


def _observe(
    metric: Counter | Gauge, suffix: str
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    """Callback reading one Prometheus metric's samples (``<name><suffix>``) at export time."""

    def callback(options: CallbackOptions) -> Iterable[Observation]:
        for family in metric.collect():
            for sample in family.samples:
                if sample.name == family.name + suffix:
                    attributes = {_ATTRIBUTE.get(k, k): v for k, v in sample.labels.items()}
                    yield Observation(sample.value, attributes)

    return callback


def register_otel(meter: Meter, metrics: RouterMetrics, *, record_latency: bool = False) -> None:
    """Publish the router's counters and in-flight gauge as OpenTelemetry instruments.

    ``record_latency`` (set when metrics are exported) adds the request and module-call
    latency histograms, in seconds, with the ``/metrics`` bucket bounds.
    """
    for attribute, (name, unit, description) in _OTEL_COUNTERS.items():
        counter = getattr(metrics, attribute)
        meter.create_observable_counter(name, [_observe(counter, "_total")], unit, description)
    meter.create_observable_up_down_counter(
        "modulemesh.router.in_flight",
        [_observe(metrics.in_flight, "")],
        "{request}",
        "Graph requests in flight.",
    )
    if record_latency:
        metrics.otel_latency = meter.create_histogram(
            "modulemesh.router.request.duration",
            unit="s",
            description="Graph request latency, by HTTP status.",
            explicit_bucket_boundaries_advisory=list(BUCKETS),
        )
        metrics.otel_call_latency = meter.create_histogram(
            "modulemesh.router.module_call.duration",
            unit="s",
            description="Module call latency, by module and outcome.",
            explicit_bucket_boundaries_advisory=list(BUCKETS),
        )
