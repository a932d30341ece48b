"""The OIP v2 codec (`modulemesh.oip`): every datatype both ways, JSON and binary, errors.

Pure-function tests; interoperability with tritonclient's own encoder/decoder is checked here
too (the wire bytes tritonclient produces decode, and ours decode in tritonclient).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from modulemesh import oip

NUMERIC = [n for n in oip.DATATYPES if n != "BYTES"]


def _sample(datatype: str) -> np.ndarray[Any, Any]:
    if datatype == "BYTES":
        return np.array([[b"a", b""], [b"\xc3\xa9t\xc3\xa9", b"xyz"]], dtype=object)
    if datatype == "BOOL":
        return np.array([[True, False], [False, True]])
    return np.arange(4).reshape(2, 2).astype(oip.DATATYPES[datatype])


@pytest.mark.parametrize("datatype", list(oip.DATATYPES))
@pytest.mark.parametrize("binary", [False, True])
def test_request_round_trip_every_datatype(datatype: str, binary: bool) -> None:
    array = _sample(datatype)
    body, length = oip.encode_request({"x": array}, binary=binary, id="r1")
    assert (length is not None) == binary
    request = oip.decode_request(body, length)
    assert request.id == "r1"
    got = request.inputs["x"]
    assert got.shape == (2, 2)
    assert oip.datatype_of(got) == datatype
    assert got.tolist() == array.tolist()


@pytest.mark.parametrize("datatype", list(oip.DATATYPES))
def test_response_round_trip_mixed_binary(datatype: str) -> None:
    array = _sample(datatype)
    response = oip.InferResponse("m", {"j": array, "b": array}, "3", "id7", {"k": 1})
    body, length = oip.encode_response(response, {"j": False, "b": True})
    assert length is not None
    decoded = oip.decode_response(body, length)
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("m", "3", "id7")
    assert decoded.parameters == {"k": 1}
    for name in ("j", "b"):
        assert decoded.outputs[name].tolist() == array.tolist()


def test_nested_and_flat_json_data_agree() -> None:
    flat = b'{"inputs":[{"name":"x","datatype":"INT32","shape":[2,3],"data":[1,2,3,4,5,6]}]}'
    nested = b'{"inputs":[{"name":"x","datatype":"INT32","shape":[2,3],"data":[[1,2,3],[4,5,6]]}]}'
    a = oip.decode_request(flat).inputs["x"]
    b = oip.decode_request(nested).inputs["x"]
    assert a.dtype == np.int32 and a.shape == (2, 3)
    assert (a == b).all()


def test_outputs_parameters_and_binary_wishes() -> None:
    body = orjson.dumps(
        {
            "id": 42,
            "parameters": {"binary_data_output": True, "custom": "v"},
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.5]}],
            "outputs": [
                {"name": "a", "parameters": {"binary_data": False}},
                {"name": "b"},
            ],
        }
    )
    request = oip.decode_request(body)
    assert request.id == "42"
    assert request.parameters == {"custom": "v"}
    assert request.binary_outputs() == {"a": False, "b": True}
    assert request.output_names(["a", "b", "c"]) == ["a", "b"]
    with pytest.raises(oip.ProtocolError, match="unknown output 'a'"):
        request.output_names(["b"])


def test_no_outputs_means_all_in_default_encoding() -> None:
    request = oip.decode_request(
        b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]}'
    )
    assert request.outputs is None
    assert request.output_names(["p", "q"]) == ["p", "q"]
    assert request.binary_outputs() is False


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{nope", None, "not valid JSON"),
        (b"[]", None, "must be a JSON object"),
        (b'{"inputs": []}', None, "no 'inputs'"),
        (
            b'{"inputs":[{"name":"x","datatype":"FP33","shape":[1],"data":[1]}]}',
            None,
            "input 'x': unknown datatype 'FP33'",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[-1],"data":[1]}]}',
            None,
            "input 'x': 'shape'",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[3],"data":[1,2]}]}',
            None,
            "input 'x': 'data' has 2 elements but shape [3] needs 3",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":["a"]}]}',
            None,
            "input 'x': 'data' for FP32 must hold only numbers, found 'a'",
        ),
        # what a plain numpy cast would silently change is refused instead
        (
            b'{"inputs":[{"name":"x","datatype":"INT32","shape":[2],"data":[1,null]}]}',
            None,
            "input 'x': 'data' for INT32 must hold only numbers, found null",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":["1.5"]}]}',
            None,
            "found '1.5'",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1e300]}]}',
            None,
            "input 'x': 'data' has values too large for FP32",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"INT32","shape":[2],"data":[1,2.5]}]}',
            None,
            "input 'x': 'data' for INT32 must hold whole numbers",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"INT8","shape":[1],"data":[300]}]}',
            None,
            "input 'x': 'data' has values outside INT8's range -128..127",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"UINT8","shape":[1],"data":[-1]}]}',
            None,
            "outside UINT8's range 0..255",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"BYTES","shape":[2],"data":["a",3]}]}',
            None,
            "input 'x': 'data' for BYTES must hold strings, found int",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"UINT64","shape":[2],"data":[0,18446744073709551616]}]}',
            None,
            "outside UINT64's range 0..18446744073709551615",
        ),
        (b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1]}]}', None, "input 'x' has neither"),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]},{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]}',
            None,
            "input 'x' appears more than once",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":4}}]}abcd',
            91,
            "input 'x': binary_data_size is 4 bytes but shape [2] of FP32 needs 8",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":8}}]}abcd',
            91,
            "exceeds",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}}]}abcdEXTRA',
            91,
            "not claimed",
        ),
        (
            b'{"parameters":3,"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]}',
            None,
            "request: 'parameters' must be an object",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1],"parameters":[]}]}',
            None,
            "input 'x': 'parameters' must be an object",
        ),
        (b"{}", 99, "outside"),
        (b"{}", "x", "not an integer"),
    ],
)
def test_decode_errors_name_the_problem(
    body: bytes, header_length: int | str | None, message: str
) -> None:
    with pytest.raises(oip.ProtocolError) as info:
        oip.decode_request(body, header_length)
    assert info.value.status == 400
    assert message in info.value.message


def test_json_null_is_nan_in_float_tensors_as_encoders_write_it() -> None:
    # JSON has no NaN or infinity; our encoder (orjson) writes them as null, so a JSON answer
    # with NaN must decode back to NaN (infinities come back as NaN too: JSON's limit; the
    # binary extension keeps them)
    response = oip.InferResponse("m", {"y": np.array([[np.nan, np.inf, 1.0]], dtype=np.float32)})
    body, length = oip.encode_response(response, False)
    assert b"[null,null,1.0]" in body
    decoded = oip.decode_response(body, length).outputs["y"]
    assert np.isnan(decoded[0, :2]).all() and decoded[0, 2] == 1.0
    request = b'{"inputs":[{"name":"x","datatype":"FP16","shape":[2],"data":[null,2]}]}'
    x = oip.decode_request(request).inputs["x"]
    assert x.dtype == np.float16 and np.isnan(x[0]) and x[1] == 2


def test_json_integers_keep_every_bit_up_to_the_type_limits() -> None:
    body = (
        b'{"inputs":[{"name":"u","datatype":"UINT64","shape":[2],"data":[0,18446744073709551615]},'
        b'{"name":"i","datatype":"INT64","shape":[2],"data":[-9223372036854775808,1]},'
        b'{"name":"w","datatype":"INT8","shape":[2],"data":[3.0,-128]}]}'
    )
    inputs = oip.decode_request(body).inputs
    assert inputs["u"].tolist() == [0, 2**64 - 1] and inputs["u"].dtype == np.uint64
    assert inputs["i"].tolist() == [-(2**63), 1] and inputs["i"].dtype == np.int64
    assert inputs["w"].tolist() == [3, -128] and inputs["w"].dtype == np.int8


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>oops</html>", "bad response: response body is not valid JSON"),
        (b'{"model_name":"m"}', "bad response: response has no 'outputs' list"),
        (b'{"outputs":[{"name":"y"}]}', "bad response: output 'y': unknown datatype None"),
        (
            b'{"outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":["0.5"]}]}',
            "bad response: output 'y': 'data' for FP32 must hold only numbers, found '0.5'",
        ),
        (
            b'{"outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[1]}],"parameters":[1]}',
            "bad response: response: 'parameters' must be an object",
        ),
        (b'{"error":"model crashed"}', "upstream error: model crashed"),
    ],
)
def test_a_bad_module_answer_is_a_502_never_the_clients_400(body: bytes, message: str) -> None:
    with pytest.raises(oip.ProtocolError) as info:
        oip.decode_response(body)
    assert info.value.status == 502
    assert message in info.value.message


def test_error_body_shape() -> None:
    assert orjson.loads(oip.error_body("boom")) == {"error": "boom"}


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_wire_format_both_ways(binary: bool) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    s = np.array([b"hi", b"there"], dtype=object)
    ia = triton.InferInput("a", [2, 4], "FP32")
    ia.set_data_from_numpy(a, binary_data=binary)
    isx = triton.InferInput("s", [2], "BYTES")
    isx.set_data_from_numpy(s, binary_data=binary)
    body, length = triton.InferenceServerClient.generate_request_body(
        [ia, isx], outputs=[triton.InferRequestedOutput("sum", binary_data=binary)], request_id="9"
    )
    request = oip.decode_request(body, length)
    assert request.id == "9"
    assert (request.inputs["a"] == a).all()
    assert request.inputs["s"].tolist() == [b"hi", b"there"]
    assert request.binary_outputs() == {"sum": binary}
    out, out_length = oip.encode_response(
        oip.InferResponse("m", {"sum": a * 2, "s": s}, "1", "9"), request.binary_outputs()
    )
    result = triton.InferResult.from_response_body(out, header_length=out_length)
    assert (result.as_numpy("sum") == a * 2).all()
    assert result.get_response()["id"] == "9"
