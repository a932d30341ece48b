"""Compatibility with the real ``tritonclient[http]`` client against ``zoo.multi_input()``.

JSON and binary tensor data both ways (FP32 + INT64 in, FP32 + BOOL out), requested outputs,
request id, server/model readiness and metadata calls, and the client's view of our errors.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.runtime.conftest import Runtime


@pytest.fixture
def client(multi_runtime: Runtime) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=multi_runtime.url.removeprefix("http://"))
    yield c
    c.close()


def _inputs(binary: bool) -> tuple[list[triton.InferInput], np.ndarray, np.ndarray]:
    a = np.arange(12, dtype=np.float32).reshape(3, 4) / 3
    b = np.array([[1, -1, 0, 2], [0, 0, 5, -3], [7, 1, 1, -1]], dtype=np.int64)
    ia = triton.InferInput("a", list(a.shape), "FP32")
    ia.set_data_from_numpy(a, binary_data=binary)
    ib = triton.InferInput("b", list(b.shape), "INT64")
    ib.set_data_from_numpy(b, binary_data=binary)
    return [ia, ib], a, b


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("multi")
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata("multi")
    assert meta["platform"] == "onnx_onnxv1"
    assert [i["name"] for i in meta["inputs"]] == ["a", "b"]
    assert client.get_server_metadata()["name"] == "modulemesh"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_all_outputs(client: triton.InferenceServerClient, binary: bool) -> None:
    inputs, a, b = _inputs(binary)
    outputs = [
        triton.InferRequestedOutput("sum", binary_data=binary),
        triton.InferRequestedOutput("mask", binary_data=binary),
    ]
    result = client.infer("multi", inputs, outputs=outputs, request_id="t-1")
    np.testing.assert_allclose(result.as_numpy("sum"), a + b.astype(np.float32))
    assert result.as_numpy("mask").dtype == np.bool_
    assert (result.as_numpy("mask") == (b > 0)).all()
    response = result.get_response()
    assert response["id"] == "t-1"
    assert response["model_name"] == "multi"


def test_infer_default_outputs_binary_and_subset(client: triton.InferenceServerClient) -> None:
    # No outputs named: tritonclient asks for every output in binary (binary_data_output).
    inputs, a, b = _inputs(binary=True)
    result = client.infer("multi", inputs)
    np.testing.assert_allclose(result.as_numpy("sum"), a + b)
    assert (result.as_numpy("mask") == (b > 0)).all()
    only = client.infer("multi", inputs, outputs=[triton.InferRequestedOutput("mask")])
    assert only.as_numpy("sum") is None
    assert (only.as_numpy("mask") == (b > 0)).all()


def test_errors_surface_in_the_client(client: triton.InferenceServerClient) -> None:
    ia = triton.InferInput("a", [1, 3], "FP32")
    ia.set_data_from_numpy(np.zeros((1, 3), np.float32))
    ib = triton.InferInput("b", [1, 3], "INT64")
    ib.set_data_from_numpy(np.zeros((1, 3), np.int64))
    with pytest.raises(InferenceServerException, match=r"input 'a': expected shape \[-1, 4\]"):
        client.infer("multi", [ia, ib])
    inputs, _, _ = _inputs(binary=True)
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", inputs)
