"""The graph looks like a model: v2 metadata, health, JSON and binary tensors (tritonclient
unchanged), explain output, /envelopes and /metrics, and clear 4xx errors for bad input."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from .conftest import X16, Pool, Router, direct, explain, make_graph, outputs, router


@pytest.fixture(scope="module")
def seq(pool: Pool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    nodes = [{"name": "main", "type": "sequence",
              "steps": [{"module": "embed", "inputs": {"input": "request.features"}},
                        {"module": "small", "inputs": {"input": "embed.embedding"}}]}]  # fmt: skip
    graph = make_graph("quick", [pool.spec("embed"), pool.spec("small")], nodes)
    with router(tmp_path_factory.mktemp("ep"), graph, pool.urls) as r:
        yield r


def test_metadata_health_and_server(seq: Router) -> None:
    meta = httpx.get(f"{seq.base}/v2/models/quick").json()
    assert meta["name"] == "quick"
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/quick/ready", "/v2"):
        assert httpx.get(f"{seq.base}{path}").status_code == 200, path


def test_tritonclient_binary_round_trip(pool: Pool, seq: Router) -> None:
    client = triton.InferenceServerClient(seq.base.removeprefix("http://"))
    assert client.is_model_ready("quick")
    tensor = triton.InferInput("features", [1, 16], "FP32")
    tensor.set_data_from_numpy(X16, binary_data=True)
    wanted = triton.InferRequestedOutput("probabilities", binary_data=True)
    result = client.infer("quick", [tensor], outputs=[wanted])
    embedding = direct(pool.urls["embed"], "embed", {"input": X16})["embedding"]
    expected = direct(pool.urls["small"], "small", {"input": embedding})["probabilities"]
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5)
    client.close()


def test_explain_lists_nodes_modules_and_timings(seq: Router) -> None:
    response = seq.infer({"features": X16})
    params = response.json()["parameters"]["modulemesh_explain"]
    assert params["graph"] == "quick" and params["priority"] == "standard" and params["ms"] > 0
    path = explain(response)
    assert path[0] == {"event": "node", "node": "main", "type": "sequence"}
    calls = [e for e in path if e["event"] == "call"]
    assert [(c["module"], c["attempt"], c["outcome"], c["version"]) for c in calls] == [
        ("embed", 1, "ok", "1"), ("small", 1, "ok", "1"),
    ]  # fmt: skip
    assert "parameters" not in seq.infer({"features": X16}, explain=False).json()


def test_bad_requests_get_clear_4xx(seq: Router) -> None:
    url = seq.infer_url
    cases = [
        (httpx.post(url, content=b"{not json"), 400, "bad request"),
        (httpx.post(url, json={"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1]}]}), 400, "features"),
        (httpx.post(f"{seq.base}/v2/models/other/infer", json={}), 404, "this router serves graph 'quick'"),
        (httpx.get(url), 405, "POST"),
        (httpx.post(url, json={"inputs": []}, headers={"x-modulemesh-deadline-ms": "soon"}), 400, "x-modulemesh-deadline-ms"),
        (httpx.post(url, json={"inputs": []}, headers={"x-modulemesh-deadline-ms": "nan"}), 400, "x-modulemesh-deadline-ms"),
        (httpx.post(url, json={"inputs": []}, headers={"x-modulemesh-deadline-ms": "inf"}), 400, "x-modulemesh-deadline-ms"),
        (httpx.post(url, json={"inputs": []}, headers={"x-modulemesh-deadline-ms": "0"}), 400, "x-modulemesh-deadline-ms must be a positive number"),
        (httpx.post(url, json={"inputs": []}, headers={"x-modulemesh-deadline-ms": "-5"}), 400, "-5'"),
        (seq.infer({"features": X16[:, :8]}), 400, "module 'embed' answered 400"),
    ]  # fmt: skip
    for response, status, text in cases:
        assert response.status_code == status, response.text
        assert text in response.json()["error"], response.json()
    assert outputs(seq.infer({"features": X16}))  # still serving


def test_envelopes_and_metrics(seq: Router) -> None:
    seq.infer({"features": X16})
    data = seq.envelopes()
    assert data["graph"] == "quick" and set(data["modules"]) == {"embed", "small"}
    entry = data["modules"]["embed"]
    assert entry["envelope"]["schema"] == "modulemesh.io/envelope/v1"
    assert entry["envelope"]["state"] in ("Healthy", "Degraded")
    assert entry["breaker"]["state"] == "closed" and entry["source"] in ("header", "poll")
    text = httpx.get(f"{seq.base}/metrics").text
    assert 'modulemesh_router_requests_total{code="200",graph="quick"}' in text
    assert 'modulemesh_router_module_calls_total{graph="quick",module="embed",outcome="ok"}' in text
