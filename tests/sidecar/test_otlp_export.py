"""The sidecar's OpenTelemetry output over real OTLP/HTTP, as a collector receives it.

A real runtime + sidecar run with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at an in-test OTLP
receiver (:mod:`otlp_receiver`) and a 500 ms metric export interval. After a known number of
inference requests plus one request whose compliance tag the module is not cleared for (denied
with 403), the receiver must hold:

* the sidecar's metrics under their OpenTelemetry names (``modulemesh.requests``,
  ``modulemesh.request.errors``, ``modulemesh.envelope.*``, ``modulemesh.audit.decisions``),
  with the right instrument kinds and units, under a resource naming the service;
* the request count equal to what was sent (the denied request not among them), no errors,
  and the denial counted both in the envelope gauge and in the audit decisions counter;
* a server span per proxied request carrying the client's trace id, the denied one holding the
  ``modulemesh.audit`` event (tags and decision, no payload);
* nothing of the request payload: no tensor value in any attribute or anywhere in the bodies.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from otlp_receiver import OtlpReceiver

from modulemesh import oip

from .conftest import Module, module

REQUESTS = 7
TRACE_ID = "5c0e2f4d8a9b4c1d9e8f7a6b5c4d3e2f"
TRACEPARENT = f"00-{TRACE_ID}-1a2b3c4d5e6f7081-01"
MARKER = 0.3141592  # a payload value that must never leave the sidecar in telemetry
DENIED_TAG = "phi"  # the module is cleared for "pii" only

SIDECAR_METRICS = {
    "modulemesh.requests",
    "modulemesh.request.errors",
    "modulemesh.envelope.request_rate",
    "modulemesh.envelope.latency.p50",
    "modulemesh.envelope.latency.p95",
    "modulemesh.envelope.latency.p99",
    "modulemesh.envelope.error_rate",
    "modulemesh.envelope.in_flight",
    "modulemesh.envelope.denials",
    "modulemesh.audit.decisions",
}
"""Metrics that must be exported once traffic went through (queue depth, batch fill and
confidence are only observed when the runtime reports them, so they are not required)."""

POINT_ATTRIBUTES = {
    "modulemesh.module",
    "modulemesh.component",
    "http.response.status_code",
    "decision",
}
"""Every attribute key a sidecar metric point may carry: labels, never request data."""


@dataclass
class Exported:
    """What was sent, and the receiver that got the sidecar's telemetry."""

    receiver: OtlpReceiver
    module: Module
    denied_status: int
    denied_error: str


def infer_body() -> bytes:
    data, _ = oip.encode_request({"input": np.full((1, 8), MARKER, dtype=np.float32)})
    return data


def current(rx: OtlpReceiver, name: str, **match: Any) -> float | None:
    """The latest exported value of a cumulative counter or gauge (``None``: not yet)."""
    metric = rx.latest(name)
    return None if metric is None else metric.value(**match)


@pytest.fixture(scope="module")
def exported(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Exported]:
    tmp = tmp_path_factory.mktemp("otlp-sidecar")
    with (
        OtlpReceiver() as rx,
        module(tmp, models["clf"], "clf", "--clearance", "pii", env=rx.env()) as mod,
        httpx.Client(timeout=10) as client,
    ):
        url = f"{mod.url}/v2/models/clf/infer"
        for _ in range(REQUESTS):
            response = client.post(
                url,
                content=infer_body(),
                headers={"traceparent": TRACEPARENT, "x-modulemesh-tags": "pii"},
            )
            assert response.status_code == 200, response.text
        denied = client.post(
            url,
            content=infer_body(),
            headers={"traceparent": TRACEPARENT, "x-modulemesh-tags": f"pii,{DENIED_TAG}"},
        )
        rx.wait_for(
            lambda: (
                current(rx, "modulemesh.requests", **{"http.response.status_code": 200}) == REQUESTS
                and current(rx, "modulemesh.envelope.denials") == 1
                and current(rx, "modulemesh.audit.decisions", decision="deny") == 1
                and rx.metric_names() >= SIDECAR_METRICS
                and len(rx.spans(TRACE_ID)) >= REQUESTS + 1
                and len(rx.metric_requests) >= 2
            ),
            timeout=20,
            what=f"{REQUESTS} requests, 1 denial and {REQUESTS + 1} spans exported",
        )
        yield Exported(rx, mod, denied.status_code, denied.json().get("error", ""))


def test_denied_request_was_refused(exported: Exported) -> None:
    assert exported.denied_status == 403
    assert f"'{DENIED_TAG}'" in exported.denied_error and "'clf'" in exported.denied_error


def test_metrics_arrive_over_otlp_with_their_otel_names(exported: Exported) -> None:
    rx = exported.receiver
    assert rx.errors == [], rx.errors
    assert set(rx.encodings) == {"identity"}, rx.encodings  # the exporter's default
    names = rx.metric_names()
    assert names >= SIDECAR_METRICS, sorted(SIDECAR_METRICS - names)
    ours = {n for n in names if n.startswith("modulemesh.")}
    assert all(n.startswith("modulemesh.envelope.") for n in ours - SIDECAR_METRICS), sorted(ours)

    requests = rx.latest("modulemesh.requests")
    assert requests is not None and requests.metric.unit == "{request}"
    assert requests.metric.WhichOneof("data") == "sum" and requests.metric.sum.is_monotonic
    temporality = requests.metric.sum.aggregation_temporality
    assert temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    for name in ("latency.p50", "latency.p95", "latency.p99"):
        latency = rx.latest(f"modulemesh.envelope.{name}")
        assert latency is not None and latency.metric.WhichOneof("data") == "gauge"
        assert latency.metric.unit == "s"
        value = latency.value(**{"modulemesh.module": "clf"})
        assert value is not None and 0 < value < 5, (name, value)
    decisions = rx.latest("modulemesh.audit.decisions")
    assert decisions is not None and decisions.metric.sum.is_monotonic


def test_request_count_matches_what_was_sent(exported: Exported) -> None:
    rx = exported.receiver
    requests = rx.latest("modulemesh.requests")
    assert requests is not None
    by_status = {
        attrs["http.response.status_code"]: value
        for attrs, value in requests.points()
        if attrs["modulemesh.module"] == "clf"
    }
    assert by_status == {200: REQUESTS}  # the denied request never reached the runtime
    assert current(rx, "modulemesh.request.errors", **{"modulemesh.module": "clf"}) == 0
    assert current(rx, "modulemesh.envelope.error_rate") == 0
    # Counters are cumulative: successive exports never go down and end at what was sent.
    series = [
        m.value(**{"http.response.status_code": 200}) or 0
        for m in rx.metrics("modulemesh.requests")
    ]
    assert series == sorted(series) and series[-1] == REQUESTS
    assert len(rx.metric_requests) >= 2  # exported periodically (the fixture waited for 2)


def test_denial_is_counted(exported: Exported) -> None:
    rx = exported.receiver
    assert current(rx, "modulemesh.envelope.denials", **{"modulemesh.module": "clf"}) == 1
    decisions = rx.latest("modulemesh.audit.decisions")
    assert decisions is not None
    counted = {
        (a["modulemesh.component"], a["modulemesh.module"], a["decision"]): v
        for a, v in decisions.points()
    }
    assert counted == {("sidecar", "clf", "allow"): REQUESTS, ("sidecar", "clf", "deny"): 1}


def test_resource_names_the_service(exported: Exported) -> None:
    rx = exported.receiver
    resources = [m.resource for m in rx.metrics()] + [s.resource for s in rx.spans()]
    assert resources
    for resource in resources:
        assert resource["service.name"] == "modulemesh-sidecar-clf"
        assert resource["modulemesh.component"] == "sidecar"
        assert resource.get("telemetry.sdk.language") == "python"


def test_spans_carry_the_client_trace_and_the_audit_event(exported: Exported) -> None:
    spans = exported.receiver.spans(TRACE_ID)
    assert len(spans) == REQUESTS + 1
    for span in spans:
        assert span.name == "sidecar POST /v2/models/clf/infer"
        assert span.kind == Span.SPAN_KIND_SERVER
        assert span.parent_span_id == TRACEPARENT.split("-")[2]  # the client's span
        assert span.attributes["modulemesh.module"] == "clf"
        assert span.attributes["url.path"] == "/v2/models/clf/infer"
    statuses = sorted(s.attributes["http.response.status_code"] for s in spans)
    assert statuses == [200] * REQUESTS + [403]
    (denied,) = [s for s in spans if s.attributes["http.response.status_code"] == 403]
    events = dict(denied.events())
    audit = events["modulemesh.audit"]
    assert audit["modulemesh.decision"] == "deny" and audit["modulemesh.module"] == "clf"
    assert audit["modulemesh.tags"] == [DENIED_TAG, "pii"]
    assert f"'{DENIED_TAG}'" in audit["modulemesh.reason"]
    # The audit log line names the same trace.
    deadline = time.monotonic() + 5
    while not any(r["decision"] == "deny" for r in exported.module.sidecar.audit_records()):
        assert time.monotonic() < deadline, exported.module.sidecar.output()[-2000:]
        time.sleep(0.05)
    (record,) = [r for r in exported.module.sidecar.audit_records() if r["decision"] == "deny"]
    assert record["traceId"] == TRACE_ID


def test_no_payload_in_telemetry(exported: Exported) -> None:
    rx = exported.receiver
    for metric in rx.metrics():
        for attrs, _ in metric.points():
            assert set(attrs) <= POINT_ATTRIBUTES, (metric.name, attrs)
    values: list[str] = []
    for span in rx.spans():
        values += [repr(v) for v in span.attributes.values()]
        for _, attrs in span.events():
            values += [repr(v) for v in attrs.values()]
    assert values and not any("0.314" in v for v in values), values
    needles = (
        f"{MARKER}".encode(),
        b"0.314",
        struct.pack("<f", MARKER),
        struct.pack("<d", float(np.float32(MARKER))),
        b'"inputs"',
    )
    assert rx.raw_bodies
    for body in rx.raw_bodies:
        for needle in needles:
            assert needle not in body, needle
