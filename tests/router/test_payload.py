"""The pass-through pieces in-process: the client's request kept raw and decoded lazily, an
identity input mapping that keeps it raw, and a module's answer renamed to the graph's byte
for byte as if the router had decoded and re-encoded it."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from modulemesh import oip
from modulemesh.router.errors import RouteError
from modulemesh.router.payload import ClientInputs, rename_model
from modulemesh.router.tensors import map_inputs

X = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
M = np.array([[1, 0, 1]], dtype=np.int64)


def client(binary: bool, **kwargs: Any) -> ClientInputs:
    body, length = oip.encode_request({"x": X, "m": M}, binary=binary, **kwargs)
    return ClientInputs.parse(body, None if length is None else str(length))


@pytest.mark.parametrize("binary", [False, True])
def test_inputs_stay_raw_until_read_and_then_match_the_codec(binary: bool) -> None:
    inputs = client(binary, id="7", outputs=["y"])
    assert inputs.names() == ["x", "m"] and not inputs.decoded
    assert inputs.head.id == "7" and [o.name for o in inputs.head.outputs or []] == ["y"]
    np.testing.assert_array_equal(inputs["x"], X)
    assert inputs.decoded and sorted(inputs) == ["m", "x"] and len(inputs) == 2


@pytest.mark.parametrize("binary", [False, True])
def test_module_request_keeps_tensors_and_drops_the_clients_output_wishes(binary: bool) -> None:
    inputs = client(binary, id="7", outputs=["y"], parameters={"custom": 1})
    body, length = inputs.for_module()
    forwarded = oip.decode_request(body, length)
    assert forwarded.outputs is None and forwarded.id is None and forwarded.parameters == {}
    assert forwarded.binary_data_output is True
    np.testing.assert_array_equal(forwarded.inputs["x"], X)
    np.testing.assert_array_equal(forwarded.inputs["m"], M)
    if binary:  # the tensor bytes are the client's, unchanged
        assert body.endswith(bytes(inputs.head.binary))


def test_malformed_tensors_are_the_clients_400() -> None:
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1]}]}'
    inputs = ClientInputs.parse(body, None)  # the JSON part is fine
    problem = inputs.problem()
    assert problem is not None and problem.status == 400
    assert problem.message.startswith("bad request: input 'x'")
    with pytest.raises(RouteError):
        inputs["x"]
    with pytest.raises(oip.ProtocolError):
        ClientInputs.parse(b"{not json", None)


def test_identity_mapping_keeps_the_raw_request_and_renaming_decodes() -> None:
    inputs = client(True)
    scope: dict[str, Any] = {"request": inputs}
    same = map_inputs({"m": "request.m", "x": "request.x"}, scope, {}, "here")
    assert same is inputs and not inputs.decoded
    partial = map_inputs({"x": "request.x"}, scope, {}, "here")
    assert partial is not inputs and list(partial) == ["x"]
    renamed = map_inputs({"x": "request.m", "m": "request.x"}, scope, {}, "here")
    np.testing.assert_array_equal(renamed["x"], M)


@pytest.mark.parametrize("binary", [False, True, {"y": True, "z": False}])
@pytest.mark.parametrize("version", ["1", None])
@pytest.mark.parametrize("request_id", ["abc", None])
def test_renamed_answer_is_byte_identical_to_reencoding(
    binary: bool | dict[str, bool], version: str | None, request_id: str | None
) -> None:
    outputs = {"y": X, "z": M}
    module_body, length = oip.encode_response(
        oip.InferResponse("module-a", outputs, model_version=version, id=request_id), binary
    )
    expected = oip.encode_response(oip.InferResponse("graph", outputs, id=request_id), binary)
    assert rename_model(module_body, length, "graph") == expected


def test_unusual_answer_heads_are_reencoded_with_the_same_result() -> None:
    outputs = {"y": X}
    odd, length = oip.encode_response(oip.InferResponse('we"ird', outputs, model_version="2"), True)
    expected = oip.encode_response(oip.InferResponse("g", outputs), True)
    assert rename_model(odd, length, "g") == expected
    tensor = {"name": "y", "datatype": "FP32", "shape": [1], "data": [1.5]}
    swapped = orjson.dumps({"id": "1", "model_name": "m", "outputs": [tensor]})
    one = {"y": np.array([1.5], dtype=np.float32)}
    assert rename_model(swapped, None, "g") == oip.encode_response(
        oip.InferResponse("g", one, id="1")
    )
