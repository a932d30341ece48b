"""One request's trace across the router and its modules' sidecars, over real OTLP/HTTP.

Two modules (runtime + sidecar each) and a router serving a two-step sequence graph
(``embed`` then ``small``) run with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at an in-test OTLP
receiver (:mod:`otlp_receiver`; the exporters gzip their bodies here, so that path is covered
too). One request carrying a client ``traceparent`` must produce, all in the client's trace:

* the router's server span ``graph <graph>``, child of the client's span;
* its node span ``node main``, child of the server span;
* a client span ``call <module>`` per step, child of the node span;
* each module sidecar's server span, child of the call span that reached it;

with names and attributes naming the graph, node, step and module, each under the resource
(``service.name``) of the process that made it, and the W3C context propagated to the sidecars
(so the sidecar spans are not roots of new traces).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, SpanFlags
from otlp_receiver import OtlpReceiver, ReceivedSpan

from .conftest import POOL_MODELS, X16, Pool, make_graph, outputs, router, start_pool

GRAPH = "traced"
MODULES = ("embed", "small")
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
EXPECTED = Counter(
    {
        f"graph {GRAPH}": 1,
        "node main": 1,
        **{f"call {m}": 1 for m in MODULES},
        **{f"sidecar POST /v2/models/{m}/infer": 1 for m in MODULES},
    }
)


@dataclass
class Traced:
    receiver: OtlpReceiver
    response: httpx.Response
    spans: dict[str, ReceivedSpan]
    """The request's spans (all in the client's trace), by name."""


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    tmp = tmp_path_factory.mktemp("otlp-router")
    with OtlpReceiver() as rx:
        env = rx.env(OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
        pool: Pool = start_pool(tmp, {m: POOL_MODELS[m] for m in MODULES}, env=env)
        try:
            nodes = [{"name": "main", "type": "sequence",
                      "steps": [{"module": "embed", "inputs": {"input": "request.features"}},
                                {"module": "small", "inputs": {"input": "embed.embedding"}}]}]  # fmt: skip
            graph = make_graph(GRAPH, [pool.spec(m) for m in MODULES], nodes)
            with router(tmp, graph, pool.urls, env=env) as r:
                response = r.infer(
                    {"features": X16}, headers={"traceparent": TRACEPARENT}, explain=False
                )

                def complete() -> bool:
                    got = Counter(s.name for s in rx.spans(TRACE_ID))
                    return all(got[name] >= n for name, n in EXPECTED.items())

                rx.wait_for(complete, timeout=20, what=f"spans {sorted(EXPECTED)}")
                spans = rx.spans(TRACE_ID)
                names = Counter(s.name for s in spans)
                assert names == EXPECTED, names  # nothing more, nothing twice
                yield Traced(rx, response, {s.name: s for s in spans})
        finally:
            pool.mesh.stop()


def test_request_succeeds_and_exports_cleanly(traced: Traced) -> None:
    assert outputs(traced.response)["probabilities"].shape == (1, 3)
    rx = traced.receiver
    assert rx.errors == [], rx.errors
    assert rx.trace_requests, "no OTLP trace export arrived"
    assert set(rx.encodings) == {"gzip"}, rx.encodings  # as OTEL_EXPORTER_OTLP_COMPRESSION said


def test_remote_parents_are_marked_remote(traced: Traced) -> None:
    """W3C context crossed a process boundary exactly where a span's parent is remote: into
    the router (from the client) and into each sidecar (from the router)."""
    remote = {f"graph {GRAPH}", *(f"sidecar POST /v2/models/{m}/infer" for m in MODULES)}
    for name, span in traced.spans.items():
        assert span.span.flags & SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK, name
        is_remote = bool(span.span.flags & SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)
        assert is_remote == (name in remote), name


def test_router_spans_nest_under_the_client_span(traced: Traced) -> None:
    spans = traced.spans
    server = spans[f"graph {GRAPH}"]
    assert server.kind == Span.SPAN_KIND_SERVER
    assert server.parent_span_id == CLIENT_SPAN
    assert server.attributes == {"modulemesh.graph": GRAPH}
    node = spans["node main"]
    assert node.kind == Span.SPAN_KIND_INTERNAL
    assert node.parent_span_id == server.span_id
    assert node.attributes == {"modulemesh.node": "main", "modulemesh.node.type": "sequence"}
    for module in MODULES:
        call = spans[f"call {module}"]
        assert call.kind == Span.SPAN_KIND_CLIENT
        assert call.parent_span_id == node.span_id
        assert call.attributes["modulemesh.module"] == module
        assert call.attributes["modulemesh.node"] == "main"
        assert call.attributes["modulemesh.attempt"] == 1
        assert call.attributes["modulemesh.step"] == module  # unnamed steps: the module
    # The steps ran in order: embed's call ended before small's began.
    assert (
        spans["call embed"].span.end_time_unix_nano <= spans["call small"].span.start_time_unix_nano
    )
    for span in (server, node, spans["call embed"], spans["call small"]):
        assert span.service == f"modulemesh-router-{GRAPH}", span.name
        assert span.resource["modulemesh.component"] == "router"


def test_sidecar_spans_are_children_of_the_call_spans(traced: Traced) -> None:
    spans = traced.spans
    for module in MODULES:
        call = spans[f"call {module}"]
        sidecar = spans[f"sidecar POST /v2/models/{module}/infer"]
        assert sidecar.kind == Span.SPAN_KIND_SERVER
        assert sidecar.parent_span_id == call.span_id, module
        assert sidecar.service == f"modulemesh-sidecar-{module}"
        assert sidecar.resource["modulemesh.component"] == "sidecar"
        assert sidecar.attributes == {
            "modulemesh.module": module,
            "url.path": f"/v2/models/{module}/infer",
            "http.response.status_code": 200,
        }
        # The sidecar saw the request after the router's call began (its end may trail the
        # call's by a hair: the sidecar closes its span after sending the last byte).
        assert call.span.start_time_unix_nano <= sidecar.span.start_time_unix_nano


def test_the_trace_is_not_split(traced: Traced) -> None:
    """No span of the request went to another trace (as when propagation breaks and a sidecar
    starts a root span of its own)."""
    assert all(s.trace_id == TRACE_ID for s in traced.spans.values())
    strays = [(s.name, s.trace_id) for s in traced.receiver.spans() if s.trace_id != TRACE_ID]
    assert not [name for name, _ in strays if name in EXPECTED or "/infer" in name], strays
