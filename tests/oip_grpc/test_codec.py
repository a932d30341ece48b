"""The gRPC codec on its own: a ModelInferRequest becomes the binary-extension body the HTTP
apps decode (raw and typed contents alike), errors name the input and the gRPC field at fault,
parameters keep their types, answers become raw_output_contents; and the checked-in generated
code is what inference.proto compiles to, in a descriptor pool of its own (so it loads next to
tritonclient.grpc, which claims the same message names in protobuf's default pool)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2

from modulemesh import oip
from modulemesh.grpc import codec, generate
from modulemesh.grpc import inference_pb2 as pb


def _request(**inputs: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", id="r-1")
    for name, array in inputs.items():
        datatype, raw = oip.tensor_bytes(array)
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(bytes(raw))
    return request


class TestRequests:
    def test_raw_inputs_decode_to_the_same_arrays(self) -> None:
        a = np.arange(6, dtype=np.float32).reshape(2, 3)
        b = np.array([[1, -2]], dtype=np.int64)
        words = np.array([b"ab", b"", "é".encode()], dtype=object)
        body, length = codec.request_body(_request(a=a, b=b, words=words))
        decoded = oip.decode_request(body, length)
        np.testing.assert_array_equal(decoded.inputs["a"], a)
        np.testing.assert_array_equal(decoded.inputs["b"], b)
        assert list(decoded.inputs["words"]) == [b"ab", b"", "é".encode()]
        assert decoded.id == "r-1"
        assert decoded.binary_data_output is True  # no outputs named: all come back binary

    def test_typed_contents_decode_like_raw(self) -> None:
        request = pb.ModelInferRequest(model_name="m")
        t = request.inputs.add(name="x", datatype="INT16", shape=[2, 2])
        t.contents.int_contents.extend([1, -2, 300, -32768])
        f = request.inputs.add(name="f", datatype="FP32", shape=[3])
        f.contents.fp32_contents.extend([0.5, -1.25, 3.0])
        s = request.inputs.add(name="s", datatype="BYTES", shape=[1])
        s.contents.bytes_contents.append(b"hi")
        decoded = oip.decode_request(*codec.request_body(request))
        assert decoded.inputs["x"].dtype == np.int16
        assert decoded.inputs["x"].tolist() == [[1, -2], [300, -32768]]
        assert decoded.inputs["f"].tolist() == [0.5, -1.25, 3.0]
        assert list(decoded.inputs["s"]) == [b"hi"]

    def test_requested_outputs_come_back_binary_with_their_parameters(self) -> None:
        request = _request(a=np.zeros((1, 2), np.float32))
        wanted = request.outputs.add(name="y")
        wanted.parameters["top_k"].int64_param = 3
        request.parameters["priority"].string_param = "high"
        decoded = oip.decode_request(*codec.request_body(request))
        assert decoded.outputs is not None
        assert [(o.name, o.binary_data, dict(o.parameters)) for o in decoded.outputs] == [
            ("y", True, {"top_k": 3})
        ]
        assert decoded.parameters == {"priority": "high"}


class TestRequestErrors:
    def test_raw_contents_count_must_match_inputs(self) -> None:
        request = _request(a=np.zeros((1, 2), np.float32))
        request.inputs.add(name="b", datatype="FP32", shape=[1])
        with pytest.raises(codec.CodecError, match="1 raw_input_contents for 2 inputs"):
            codec.request_body(request)

    def test_raw_size_must_fit_the_shape(self) -> None:
        request = _request(a=np.zeros((1, 2), np.float32))
        request.inputs[0].shape[:] = [1, 4]
        with pytest.raises(
            codec.CodecError,
            match=r"input 'a': raw_input_contents\[0\] has 8 bytes but shape \[1, 4\] of FP32 "
            "needs 16",
        ):
            codec.request_body(request)

    def test_typed_contents_in_the_wrong_field(self) -> None:
        request = pb.ModelInferRequest(model_name="m")
        t = request.inputs.add(name="x", datatype="FP32", shape=[2])
        t.contents.int_contents.extend([1, 2])
        with pytest.raises(
            codec.CodecError,
            match=r"input 'x': datatype FP32 takes contents\.fp32_contents, got int_contents",
        ):
            codec.request_body(request)

    def test_typed_contents_count_and_range(self) -> None:
        request = pb.ModelInferRequest(model_name="m")
        t = request.inputs.add(name="x", datatype="INT8", shape=[3])
        t.contents.int_contents.extend([1, 2])
        with pytest.raises(codec.CodecError, match=r"has 2 elements but shape \[3\] needs 3"):
            codec.request_body(request)
        t.contents.int_contents.append(300)
        with pytest.raises(codec.CodecError, match=r"outside INT8's range -128\.\.127"):
            codec.request_body(request)

    def test_unknown_datatype_is_named(self) -> None:
        request = pb.ModelInferRequest(model_name="m")
        request.inputs.add(name="x", datatype="FLOAT", shape=[1])
        with pytest.raises(codec.CodecError, match="input 'x': unknown datatype 'FLOAT'"):
            codec.request_body(request)


class TestResponses:
    def test_binary_and_json_answers_become_raw_outputs(self) -> None:
        y = np.array([[0.25, -1.0]], dtype=np.float32)
        flags = np.array([True, False])
        for binary in (True, False):
            body, length = oip.encode_response(
                oip.InferResponse("m", {"y": y, "flags": flags}, model_version="2", id="q",
                                  parameters={"n": 1, "explain": {"path": []}}),
                binary,
            )  # fmt: skip
            message = codec.response_message(body, None if length is None else str(length))
            assert (message.model_name, message.model_version, message.id) == ("m", "2", "q")
            assert [(o.name, o.datatype, list(o.shape)) for o in message.outputs] == [
                ("y", "FP32", [1, 2]), ("flags", "BOOL", [2]),
            ]  # fmt: skip
            got = np.frombuffer(message.raw_output_contents[0], np.float32).reshape(1, 2)
            np.testing.assert_array_equal(got, y)
            assert message.raw_output_contents[1] == b"\x01\x00"
            params = codec.parameters_from(message.parameters)
            assert params == {"n": 1, "explain": '{"path":[]}'}


def _messages(
    messages: Iterable[descriptor_pb2.DescriptorProto],
) -> Iterator[descriptor_pb2.DescriptorProto]:
    for message in messages:
        yield message
        yield from _messages(message.nested_type)


class TestGeneratedCode:
    def test_checked_in_code_is_what_the_proto_compiles_to(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            compiled = descriptor_pb2.FileDescriptorSet.FromString(
                generate.descriptor_set(Path(tmp))
            ).file[0]
        for message in _messages(compiled.message_type):
            for field in message.field:
                field.ClearField("json_name")  # the descriptor set spells it out, python's not
        ours = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
        assert ours == compiled, "run: python -m modulemesh.grpc.generate"

    def test_loads_next_to_tritonclient_grpc(self) -> None:
        script = (
            "import tritonclient.grpc.service_pb2 as t\n"
            "from modulemesh.grpc import inference_pb2 as pb\n"
            "r = pb.ModelInferRequest(model_name='m', raw_input_contents=[b'x'])\n"
            "print(t.ModelInferRequest.FromString(r.SerializeToString()).model_name)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "m"
