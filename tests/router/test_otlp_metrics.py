"""The router's metrics over real OTLP/HTTP, and its in-flight gauge.

A router serving a one-step graph (module ``slow``: it waits 600 ms for batch company, so a
request is visibly in flight) exports its metrics to an in-test OTLP receiver
(:mod:`otlp_receiver`). While one request is being served, ``modulemesh_router_in_flight``
on ``/metrics`` shows it; after three good requests and one malformed one, the OTLP export
counts requests by ``http.response.status_code`` ({200: 3, 400: 1}), module calls (3 ok for
``slow``) and forwarded bodies, with in-flight back at 0, all under the router's resource; and
the latency histograms (seconds, the ``/metrics`` bucket bounds) hold the same requests and
calls, each call's 600 ms wait included in their sum.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from otlp_receiver import OtlpReceiver

from modulemesh.router.metrics import BUCKETS

from .conftest import POOL_MODELS, make_graph, router, start_pool

GRAPH = "metered"


def _in_flight(text: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f'modulemesh_router_in_flight{{graph="{GRAPH}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_router_metrics_are_exported_over_otlp_and_in_flight_is_live(tmp_path: Path) -> None:
    with OtlpReceiver() as rx:
        env = rx.env()
        pool = start_pool(tmp_path, {"slow": POOL_MODELS["slow"]})
        try:
            nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "slow"}]}]
            graph = make_graph(GRAPH, [pool.spec("slow")], nodes)
            with router(tmp_path, graph, pool.urls, env=env) as r:
                assert _in_flight(httpx.get(f"{r.base}/metrics").text) == 0.0
                answers: list[int] = []
                worker = threading.Thread(
                    target=lambda: answers.append(r.infer(explain=False).status_code)
                )
                worker.start()
                seen = 0.0
                deadline = time.monotonic() + 5
                while worker.is_alive() and time.monotonic() < deadline and seen < 1:
                    seen = _in_flight(httpx.get(f"{r.base}/metrics").text) or 0.0
                    time.sleep(0.02)
                worker.join(10)
                assert seen == 1.0, "the in-flight gauge never showed the request being served"
                answers += [r.infer(explain=False).status_code for _ in range(2)]
                bad = httpx.post(r.infer_url, content=b"{not json", timeout=10)
                assert answers == [200, 200, 200] and bad.status_code == 400

                def exported() -> bool:
                    latest = rx.latest("modulemesh.router.requests")
                    return latest is not None and latest.value(graph=GRAPH) == 4

                rx.wait_for(exported, timeout=15, what="the router's request counter")
                requests = rx.latest("modulemesh.router.requests")
                assert requests is not None
                assert requests.resource["service.name"] == f"modulemesh-router-{GRAPH}"
                assert requests.resource["modulemesh.component"] == "router"
                assert requests.value(**{"http.response.status_code": "200"}) == 3
                assert requests.value(**{"http.response.status_code": "400"}) == 1
                sum_ = requests.metric.sum
                assert sum_.is_monotonic and requests.metric.unit == "{request}"
                calls = rx.latest("modulemesh.router.module_calls")
                assert calls is not None
                assert calls.value(graph=GRAPH, module="slow", outcome="ok") == 3
                forwarded = rx.latest("modulemesh.router.forwarded")
                assert forwarded is not None and forwarded.value(part="request") == 3
                in_flight = rx.latest("modulemesh.router.in_flight")
                assert in_flight is not None and in_flight.value(graph=GRAPH) == 0
                latency = rx.latest("modulemesh.router.request.duration")
                assert latency is not None and latency.metric.unit == "s"
                assert latency.value(**{"http.response.status_code": "200"}) == 3
                assert latency.value(**{"http.response.status_code": "400"}) == 1
                call_latency = rx.latest("modulemesh.router.module_call.duration")
                assert call_latency is not None
                assert call_latency.value(graph=GRAPH, module="slow", outcome="ok") == 3
                (point,) = call_latency.metric.histogram.data_points
                assert list(point.explicit_bounds) == list(BUCKETS)
                assert 3 * 0.6 <= point.sum < 3 * 5.0 and point.min >= 0.6
                assert not rx.errors
        finally:
            pool.mesh.stop()
