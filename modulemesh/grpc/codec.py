"""Between the OIP v2 gRPC messages and the HTTP request/response model the apps already serve.

A ``ModelInferRequest`` becomes the binary-extension body an HTTP client would have sent for
the same request (a JSON header naming each input's ``binary_data_size``, then the tensors'
bytes), so the runtime and the router answer it on their one inference path. The answer, asked
for in binary, becomes a ``ModelInferResponse`` with ``raw_output_contents``, which is what
``tritonclient.grpc`` and KServe's gRPC client read.

Inputs may come as ``raw_input_contents`` (one entry per input, all or none: the protocol's
rule) or as typed ``contents`` (``fp32_contents`` for FP32 and so on). Either way the bytes are
checked against the shape here, so an error names the gRPC field the client filled in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from modulemesh import oip
from modulemesh.grpc import inference_pb2 as pb

__all__ = [
    "CONTENTS_FIELD",
    "CodecError",
    "parameters_from",
    "request_body",
    "response_message",
    "set_parameters",
]

CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""Which ``InferTensorContents`` field carries a datatype's elements (FP16 has none: raw only)."""

_ALL_CONTENTS = tuple(dict.fromkeys(CONTENTS_FIELD.values()))


class CodecError(Exception):
    """A message that cannot be read; ``message`` names the tensor and field at fault."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def parameters_from(entries: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """A protobuf parameter map as plain values (unset parameters are left out)."""
    out: dict[str, Any] = {}
    for key, param in entries.items():
        which = param.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(param, which)
    return out


def set_parameters(target: Any, values: Mapping[str, Any]) -> None:
    """Fill a protobuf parameter map from plain values; anything but a bool, integer, float or
    string (the router's ``modulemesh_explain``, say) goes as its JSON text."""
    for key, value in values.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            if value >= 2**63:
                param.uint64_param = value
            else:
                param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        elif isinstance(value, str):
            param.string_param = value
        else:
            param.string_param = orjson.dumps(value).decode()


def _typed_bytes(tensor: pb.ModelInferRequest.InferInputTensor, what: str) -> bytes:
    """An input's typed ``contents`` as the binary form the HTTP decoder reads."""
    datatype = tensor.datatype
    field = CONTENTS_FIELD.get(datatype)
    contents = tensor.contents
    filled = [name for name in _ALL_CONTENTS if len(getattr(contents, name))]
    if field is None:
        if datatype not in oip.DATATYPES:
            raise CodecError(
                f"{what}: unknown datatype {datatype!r}; expected one of {list(oip.DATATYPES)}"
            )
        raise CodecError(f"{what}: {datatype} has no typed contents; send raw_input_contents")
    wrong = [name for name in filled if name != field]
    if wrong:
        raise CodecError(f"{what}: datatype {datatype} takes contents.{field}, got {wrong[0]}")
    values = getattr(contents, field)
    count = math.prod(tensor.shape)
    if len(values) != count:
        raise CodecError(
            f"{what}: contents.{field} has {len(values)} elements but shape "
            f"{list(tensor.shape)} needs {count}"
        )
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    else:
        dtype = oip.DATATYPES[datatype]
        if dtype.kind in "iu" and len(values):
            # int_contents and uint_contents are 32-bit: narrower types must fit in theirs
            info = np.iinfo(dtype)
            if min(values) < info.min or max(values) > info.max:
                raise CodecError(
                    f"{what}: contents.{field} has values outside {datatype}'s range "
                    f"{info.min}..{info.max}"
                )
        array = np.array(values, dtype=dtype)
    return bytes(oip.tensor_bytes(array)[1])


def _check_raw(
    raw: bytes, tensor: pb.ModelInferRequest.InferInputTensor, what: str, i: int
) -> None:
    dtype = oip.DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise CodecError(
            f"{what}: unknown datatype {tensor.datatype!r}; expected one of {list(oip.DATATYPES)}"
        )
    if tensor.datatype == "BYTES":
        return  # element lengths are checked by the decoder, which names the input
    needed = math.prod(tensor.shape) * dtype.itemsize
    if len(raw) != needed:
        raise CodecError(
            f"{what}: raw_input_contents[{i}] has {len(raw)} bytes but shape "
            f"{list(tensor.shape)} of {tensor.datatype} needs {needed}"
        )


def request_body(request: pb.ModelInferRequest) -> tuple[bytes, int]:
    """The request as an OIP v2 binary-extension body and its JSON header's length, every
    output asked for in binary. Raises :class:`CodecError`."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise CodecError(
            f"request has {len(raw)} raw_input_contents for {len(request.inputs)} inputs: "
            "send one per input, or none and typed contents"
        )
    inputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for index, tensor in enumerate(request.inputs):
        what = f"input {tensor.name!r}"
        if raw:
            if tensor.HasField("contents"):
                raise CodecError(f"{what} has both contents and raw_input_contents[{index}]")
            data = raw[index]
            _check_raw(data, tensor, what, index)
        else:
            data = _typed_bytes(tensor, what)
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        params = parameters_from(tensor.parameters)
        params["binary_data_size"] = len(data)
        entry["parameters"] = params
        inputs.append(entry)
        chunks.append(data)
    header: dict[str, Any] = {"inputs": inputs}
    if request.id:
        header["id"] = request.id
    parameters = parameters_from(request.parameters)
    if request.outputs:
        header["outputs"] = [
            {
                "name": out.name,
                "parameters": {**parameters_from(out.parameters), "binary_data": True},
            }
            for out in request.outputs
        ]
    else:
        parameters["binary_data_output"] = True
    header["parameters"] = parameters
    head = orjson.dumps(header)
    return b"".join([head, *chunks]), len(head)


def response_message(body: bytes, header_length: str | None) -> pb.ModelInferResponse:
    """An HTTP infer answer (binary or JSON tensors) as a ``ModelInferResponse`` with raw
    outputs. Raises :class:`modulemesh.oip.ProtocolError` (502) for a body that is not one."""
    decoded = oip.decode_response(body, header_length)
    message = pb.ModelInferResponse(
        model_name=decoded.model_name,
        model_version=decoded.model_version or "",
        id=decoded.id or "",
    )
    set_parameters(message.parameters, decoded.parameters)
    raw = message.raw_output_contents
    for name, array in decoded.outputs.items():
        datatype, data = oip.tensor_bytes(array)
        message.outputs.add(name=name, datatype=datatype, shape=array.shape)
        raw.append(bytes(data))
    return message
