"""Envelope figures against a known load on a real runtime: latency percentiles vs what the
client measured, request and error counts, confidence from models whose output distribution is
known, runtime facts, and the JSON, header and Prometheus forms agreeing."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from modulemesh import oip
from modulemesh.envelope import HealthEnvelope, parse_header

from .conftest import module


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def test_latency_and_counts_match_a_known_load(models: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    sizes = [1] * 60 + [64] * 25 + [512] * 15  # a spread of latencies, known mix
    order = rng.permutation(len(sizes))
    with module(tmp_path, models["mlp"], "mlp", "--window", "120") as mod, httpx.Client() as client:
        client_latencies = []
        for index in order:
            rows = sizes[index]
            # Binary tensors keep the client's own encoding work small next to inference.
            data, length = oip.encode_request(
                {"input": rng.standard_normal((rows, 64)).astype(np.float32)},
                binary=True,
                binary_data_output=True,
            )
            headers = {"inference-header-content-length": str(length)}
            started = time.perf_counter()
            response = client.post(f"{mod.url}/v2/models/mlp/infer", content=data, headers=headers)
            client_latencies.append(time.perf_counter() - started)
            assert response.status_code == 200
        bad = client.post(f"{mod.url}/v2/models/mlp/infer", content=b"{not json")
        assert 400 <= bad.status_code < 500  # client errors are requests, not errors
        envelope = client.get(f"{mod.url}/envelope").json()
    assert envelope["requests"] == len(sizes) + 1
    assert envelope["errors"] == 0 and envelope["errorRate"] == 0.0
    assert envelope["requestRate"] == pytest.approx((len(sizes) + 1) / 120, abs=1e-3)
    assert envelope["state"] == "Healthy"
    client_latencies.sort()
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        expected = percentile(client_latencies, q)
        got = envelope["latency"][key]
        # The sidecar times a sub-interval of what the client times; its histogram is 1 % exact.
        # Only nearly: its clock stops when its last write returns, and on a busy 2-core machine
        # the sidecar can be descheduled between the write and reading the clock while the
        # client already has the bytes (seen: 40 us over). A millisecond covers such a stall and
        # still catches a sidecar that times the wrong interval (whole ms at every percentile).
        assert got <= expected * 1.02 + 0.001, (key, got, expected)
        # The rest is the client's and the servers' HTTP work, and CPU contention on a shared
        # 2-core machine: bounded, but not tiny, and now and then one request's client side
        # stalls. So the lower bound allows three such outliers: it compares with the client's
        # percentile three ranks down (still inside the same size class for every q here).
        floor = percentile(client_latencies, q - 0.03)
        assert got >= floor - max(0.005, 0.35 * floor), (key, got, floor)
    assert envelope["latency"]["p50"] < envelope["latency"]["p95"]


def expected_confidence(model: Path, inputs: list[np.ndarray]) -> float:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    maxima = [session.run(None, {"input": x})[0].max(axis=1) for x in inputs]
    return float(np.concatenate(maxima).mean())


@pytest.mark.parametrize(("name", "binary"), [("sure", False), ("unsure", True), ("clf", False)])
def test_confidence_matches_the_known_distribution(
    models: dict[str, Path], tmp_path: Path, name: str, binary: bool
) -> None:
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((rows, 8)).astype(np.float32) for rows in (1, 3, 5, 2)]
    with module(tmp_path, models[name], name) as mod, httpx.Client() as client:
        for x in inputs:
            data, _ = oip.encode_request({"input": x}, binary_data_output=binary)
            response = client.post(f"{mod.url}/v2/models/{name}/infer", content=data)
            assert response.status_code == 200
            assert ("inference-header-content-length" in response.headers) is binary
        envelope = client.get(f"{mod.url}/envelope").json()
    expected = expected_confidence(models[name], inputs)
    assert envelope["confidence"] == pytest.approx(expected, abs=2e-4)
    if name == "sure":
        assert envelope["confidence"] > 0.99
    if name == "unsure":
        assert envelope["confidence"] == pytest.approx(0.25, abs=0.01)


def test_header_json_and_metrics_agree(models: dict[str, Path], tmp_path: Path) -> None:
    data, _ = oip.encode_request({"input": np.ones((2, 8), dtype=np.float32)})
    with (
        module(tmp_path, models["clf"], "clf", "--envelope-refresh", "30") as mod,
        httpx.Client() as client,
    ):
        for _ in range(20):
            assert client.post(f"{mod.url}/v2/models/clf/infer", content=data).status_code == 200
        time.sleep(0.6)  # let a /stats poll (every 0.2 s) see the traffic
        response = client.get(f"{mod.url}/envelope")
        as_json = HealthEnvelope.from_dict(response.json())
        proxied = client.post(f"{mod.url}/v2/models/clf/infer", content=data)
        metrics = client.get(f"{mod.url}/metrics").text
    for header_value in (
        response.headers["x-modulemesh-envelope"],
        proxied.headers["x-modulemesh-envelope"],
    ):
        header = parse_header(header_value)
        assert header is not None
        assert header.timestamp == as_json.timestamp
        assert header.module == as_json.module == "clf"
        assert header.state is as_json.state
        for attr in (
            "request_rate",
            "error_rate",
            "queue_depth",
            "batch_fill",
            "mean_batch_size",
            "confidence",
            "denials",
        ):
            assert getattr(header, attr) == getattr(as_json, attr), attr
        for q in ("p50", "p95", "p99"):
            assert getattr(header.latency, q) == pytest.approx(
                getattr(as_json.latency, q), abs=1e-7
            )
    assert as_json.requests == 20 and as_json.provider == "CPUExecutionProvider"
    assert as_json.model_version == "1"
    assert as_json.queue_depth is not None and as_json.batch_fill is not None
    assert 0.0 < as_json.batch_fill <= 1.0
    # The achieved batch size: mean rows per model call, from the runtime's /stats.
    assert as_json.mean_batch_size is not None and as_json.mean_batch_size >= 1.0
    assert 'modulemesh_envelope_mean_batch_size{module="clf"}' in metrics
    assert 'modulemesh_requests_total{http_response_status_code="200",module="clf"} 21.0' in metrics
    assert 'modulemesh_request_duration_seconds_count{module="clf"} 21.0' in metrics
    assert re.search(r'modulemesh_envelope_state\{module="clf",state="Healthy"\} 1\.0', metrics)
