"""Every runtime endpoint and its error paths, against a real `modulemesh runtime` process.

Covers health, server and model metadata (inputs/outputs from the ONNX graph, platform,
provider in ``parameters``), versioned routes, infer (JSON flat/nested, binary, requested
outputs, ``id``), the ``x-modulemesh-*`` response headers, ``/stats``, and the 400/404/405/413
errors with ``{"error": ...}`` bodies that name the input, expected and received shape/type.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modulemesh import headers, oip
from tests.runtime.conftest import Runtime

A = [[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]]
B = [[1, -1, 0, 2], [3, 0, -2, 1]]


def _body(a: Any = A, b: Any = B, **extra: Any) -> dict[str, Any]:
    rows = len(a)
    return {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [rows, 4], "data": a},
            {"name": "b", "datatype": "INT64", "shape": [rows, 4], "data": b},
        ],
        **extra,
    }


def test_health_and_server_metadata(multi_runtime: Runtime) -> None:
    c = multi_runtime.client
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").json() == {"ready": True}
    meta = c.get("/v2").json()
    assert meta["name"] == "modulemesh"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_from_graph(multi_runtime: Runtime) -> None:
    c = multi_runtime.client
    meta = c.get("/v2/models/multi").json()
    assert meta["name"] == "multi"
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnx_onnxv1"
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "b", "datatype": "INT64", "shape": [-1, 4]},
    ]
    assert meta["outputs"] == [
        {"name": "sum", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "mask", "datatype": "BOOL", "shape": [-1, 4]},
    ]
    assert meta["parameters"]["provider"] == "CPUExecutionProvider"
    assert meta["parameters"]["max_batch_size"] == 8
    assert c.get("/v2/models/multi/versions/1").json() == meta
    assert c.get("/v2/models/multi/ready").status_code == 200
    assert c.get("/v2/models/multi/versions/1/ready").status_code == 200


def test_infer_json_nested_and_flat(multi_runtime: Runtime) -> None:
    c = multi_runtime.client
    r = c.post("/v2/models/multi/infer", json=_body(id="req-1", parameters={"p": 1}))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "req-1"
    assert out["model_name"] == "multi" and out["model_version"] == "1"
    by_name = {o["name"]: o for o in out["outputs"]}
    expected = (np.array(A, np.float32) + np.array(B)).ravel().tolist()
    assert by_name["sum"] == {"name": "sum", "datatype": "FP32", "shape": [2, 4], "data": expected}
    assert by_name["mask"]["datatype"] == "BOOL"
    assert by_name["mask"]["data"] == (np.array(B) > 0).ravel().tolist()
    flat_body = _body()
    for tensor in flat_body["inputs"]:
        tensor["data"] = np.ravel(tensor["data"]).tolist()
    flat = c.post("/v2/models/multi/infer", json=flat_body)
    assert flat.json()["outputs"] == out["outputs"]
    versioned = c.post("/v2/models/multi/versions/1/infer", json=_body())
    assert versioned.json()["outputs"] == out["outputs"]


def test_infer_response_headers_and_stats(multi_runtime: Runtime) -> None:
    c = multi_runtime.client
    r = c.post("/v2/models/multi/infer", json=_body())
    assert r.headers[headers.QUEUE_DEPTH] == "0"
    assert r.headers[headers.BATCH_SIZE] == "2"
    assert r.headers[headers.PROVIDER] == "CPUExecutionProvider"
    assert r.headers[headers.MODEL_VERSION] == "1"
    stats = c.get("/stats").json()
    assert set(stats) >= {
        "model",
        "modelVersion",
        "provider",
        "ready",
        "queueDepth",
        "inFlight",
        "maxBatchSize",
        "batches",
        "rows",
        "batchFill",
    }
    assert stats["model"] == "multi" and stats["ready"] is True
    assert stats["batches"] >= 1 and stats["rows"] >= 2
    assert 0 < stats["batchFill"] <= 1
    assert stats["queueDepth"] == 0 and stats["inFlight"] == 0


def test_requested_outputs_and_binary(multi_runtime: Runtime) -> None:
    c = multi_runtime.client
    only = c.post("/v2/models/multi/infer", json=_body(outputs=[{"name": "mask"}])).json()
    assert [o["name"] for o in only["outputs"]] == ["mask"]
    body, length = oip.encode_request(
        {"a": np.array(A, np.float32), "b": np.array(B, np.int64)},
        binary=True,
        outputs=[oip.RequestedOutput("sum", binary_data=True), "mask"],
    )
    r = c.post(
        "/v2/models/multi/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(length)},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    decoded = oip.decode_response(r.content, r.headers["inference-header-content-length"])
    assert decoded.outputs["sum"].tolist() == (np.array(A) + np.array(B)).tolist()
    assert decoded.outputs["mask"].tolist() == (np.array(B) > 0).tolist()
    header = r.content[: int(r.headers["inference-header-content-length"])]
    assert b'"data"' in header  # mask stayed JSON: no binary wish for it
    all_binary = c.post(
        "/v2/models/multi/infer", json=_body(parameters={"binary_data_output": True})
    )
    assert "inference-header-content-length" in all_binary.headers


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            _body(a=[[1.0, 2.0, 3.0]]),
            "input 'a': 'data' has 3 elements but shape [1, 4] needs 4",
        ),
        (
            {
                "inputs": [
                    {"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
                    {"name": "b", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]},
                ]
            },
            "input 'a': expected shape [-1, 4], got [1, 3]",
        ),
        (
            {
                "inputs": [
                    {"name": "a", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]},
                    {"name": "b", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]},
                ]
            },
            "input 'a': expected datatype FP32, got FP64",
        ),
        (
            {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
            "missing input 'b' (expected INT64 [-1, 4])",
        ),
        (
            _body()
            | {
                "inputs": [
                    *_body()["inputs"],
                    {"name": "c", "datatype": "FP32", "shape": [1], "data": [1]},
                ]
            },
            "unknown input 'c'",
        ),
        (
            {
                "inputs": [
                    {"name": "a", "datatype": "FP32", "shape": [2, 4], "data": [0] * 8},
                    {"name": "b", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]},
                ]
            },
            "input 'b': batch dimension 1 differs",
        ),
        (_body(outputs=[{"name": "nope"}]), "unknown output 'nope'"),
    ],
)
def test_infer_400_names_the_input(
    multi_runtime: Runtime, body: dict[str, Any], message: str
) -> None:
    r = multi_runtime.client.post("/v2/models/multi/infer", json=body)
    assert r.status_code == 400
    assert message in r.json()["error"]


def test_bad_json_and_bad_binary_are_400(multi_runtime: Runtime) -> None:
    c = multi_runtime.client
    r = c.post("/v2/models/multi/infer", content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = c.post(
        "/v2/models/multi/infer",
        content=b"{}",
        headers={"Inference-Header-Content-Length": "50"},
    )
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]


def test_unknown_model_version_route_and_method(multi_runtime: Runtime) -> None:
    c = multi_runtime.client
    for path in ("/v2/models/other", "/v2/models/other/ready"):
        r = c.get(path)
        assert r.status_code == 404 and "unknown model 'other'" in r.json()["error"]
    r = c.post("/v2/models/other/infer", json=_body())
    assert r.status_code == 404 and "unknown model" in r.json()["error"]
    r = c.get("/v2/models/multi/versions/9")
    assert r.status_code == 404 and "unknown version '9'" in r.json()["error"]
    assert c.post("/v2/models/multi/versions/9/infer", json=_body()).status_code == 404
    assert c.get("/v2/nothing").status_code == 404
    assert c.get("/v2/models/multi/infer").status_code == 405
    assert c.post("/v2/models/multi").status_code == 405
    assert c.post("/v2/health/live").status_code == 405


def test_body_over_limit_is_413(multi_runtime: Runtime) -> None:
    big = _body(a=[[0.0] * 4] * 5000, b=[[0] * 4] * 5000)
    r = multi_runtime.client.post("/v2/models/multi/infer", json=big)
    assert r.status_code == 413
    assert "65536-byte limit" in r.json()["error"]

    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024

    r = multi_runtime.client.post("/v2/models/multi/infer", content=chunks())
    assert r.status_code == 413
    # The server is still fine afterwards.
    assert multi_runtime.client.post("/v2/models/multi/infer", json=_body()).status_code == 200
