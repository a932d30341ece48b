"""The one Open Inference Protocol v2 tensor codec (runtime, sidecar and router all use it).

Pure functions over bytes and numpy arrays, no web framework: callers hand in the request
body (and the ``Inference-Header-Content-Length`` header value when present) and get back
named arrays; they hand in arrays and get back a body plus the header value to send.

Both encodings of the protocol are supported:

* JSON tensors: ``{"name", "datatype", "shape", "data"}`` with ``data`` flat or nested
  (row-major), BYTES as strings;
* the binary tensor data extension used by ``tritonclient`` by default: a JSON header of
  ``Inference-Header-Content-Length`` bytes followed by raw little-endian tensor bytes, one
  chunk per tensor whose ``parameters.binary_data_size`` gives its length. BYTES elements are
  each a 4-byte little-endian length followed by the bytes.

Which outputs come back binary follows Triton: an output's own ``parameters.binary_data``
wins, else the request's ``parameters.binary_data_output`` (default ``False``).

Errors raise :class:`ProtocolError` carrying the HTTP status and a message naming the tensor
and what is wrong; :func:`error_body` renders it as ``{"error": "..."}``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

__all__ = [
    "BINARY_CONTENT_TYPE",
    "DATATYPES",
    "HEADER_LENGTH",
    "JSON_CONTENT_TYPE",
    "InferRequest",
    "InferResponse",
    "ProtocolError",
    "RequestHead",
    "RequestedOutput",
    "datatype_of",
    "decode_request",
    "decode_response",
    "dtype_of",
    "encode_request",
    "encode_response",
    "error_body",
    "parse_request",
    "tensor_bytes",
]

HEADER_LENGTH = "inference-header-content-length"
"""HTTP header giving the length of the JSON part of a binary-extension body (lower-case)."""

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
"""OIP v2 datatype -> numpy dtype (BYTES is an object array of ``bytes``)."""

_BY_KIND: dict[tuple[str, int], str] = {
    (dt.kind, dt.itemsize): name for name, dt in DATATYPES.items() if name != "BYTES"
}


class ProtocolError(Exception):
    """A request or response that breaks the protocol; ``status`` is the HTTP status to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(message: str) -> bytes:
    """The protocol's error body: ``{"error": message}`` as JSON bytes."""
    return orjson.dumps({"error": message})


def dtype_of(datatype: str) -> np.dtype[Any]:
    """numpy dtype for an OIP datatype name; ``ProtocolError(400)`` if unknown."""
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        raise ProtocolError(400, f"unknown datatype {datatype!r}") from None


def datatype_of(array: np.ndarray[Any, Any]) -> str:
    """OIP datatype name for a numpy array (str/bytes/object arrays are BYTES)."""
    kind = array.dtype.kind
    if kind in "OSU":
        return "BYTES"
    try:
        return _BY_KIND[(kind, array.dtype.itemsize)]
    except KeyError:
        raise ProtocolError(400, f"numpy dtype {array.dtype} has no OIP datatype") from None


@dataclass(frozen=True)
class RequestedOutput:
    """An entry of the request's ``outputs``; ``binary_data`` is ``None`` when not stated."""

    name: str
    binary_data: bool | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    """A decoded infer request.

    ``outputs`` is ``None`` when the request names none (meaning: all outputs).
    ``parameters`` excludes the codec's own ``binary_data_output``, kept in
    ``binary_data_output``. ``input_parameters`` holds each input's parameters without
    ``binary_data_size``.
    """

    inputs: dict[str, np.ndarray[Any, Any]]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_data_output: bool = False
    input_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)

    def output_names(self, available: Sequence[str]) -> list[str]:
        """Names of the outputs to return, checked against ``available`` (400 if unknown)."""
        return _output_names(self.outputs, available)

    def binary_outputs(self) -> dict[str, bool] | bool:
        """Per-output binary wishes, for :func:`encode_response`'s ``binary`` argument."""
        return _binary_outputs(self.outputs, self.binary_data_output)


@dataclass
class RequestHead:
    """An infer request whose JSON part is parsed but whose tensors are not decoded yet.

    A proxy (the router) can read what the client asked for (outputs, binary wishes, id) and
    forward the body untouched; :meth:`decode` turns the tensors into arrays only when
    something needs them.
    """

    header: dict[str, Any]
    binary: memoryview
    outputs: list[RequestedOutput] | None
    id: str | None
    parameters: dict[str, Any]
    binary_data_output: bool

    def input_names(self) -> list[str]:
        """Input names as the client listed them (unchecked: :meth:`decode` validates)."""
        raw = self.header.get("inputs")
        if not isinstance(raw, list):
            return []
        return [t["name"] for t in raw if isinstance(t, dict) and isinstance(t.get("name"), str)]

    def decode(self) -> InferRequest:
        """The full request with its input arrays (binary ones are views of the body)."""
        inputs, input_parameters = _decode_tensors(self.header.get("inputs"), self.binary, "input")
        return InferRequest(
            inputs=inputs,
            outputs=self.outputs,
            id=self.id,
            parameters=self.parameters,
            binary_data_output=self.binary_data_output,
            input_parameters=input_parameters,
        )

    def output_names(self, available: Sequence[str]) -> list[str]:
        """Names of the outputs to return, checked against ``available`` (400 if unknown)."""
        return _output_names(self.outputs, available)

    def binary_outputs(self) -> dict[str, bool] | bool:
        """Per-output binary wishes, for :func:`encode_response`'s ``binary`` argument."""
        return _binary_outputs(self.outputs, self.binary_data_output)


def _output_names(outputs: list[RequestedOutput] | None, available: Sequence[str]) -> list[str]:
    if outputs is None:
        return list(available)
    known = set(available)
    for out in outputs:
        if out.name not in known:
            raise ProtocolError(400, f"unknown output {out.name!r}; the model has {sorted(known)}")
    return [out.name for out in outputs]


def _binary_outputs(outputs: list[RequestedOutput] | None, default: bool) -> dict[str, bool] | bool:
    if outputs is None:
        return default
    return {o.name: (default if o.binary_data is None else o.binary_data) for o in outputs}


@dataclass
class InferResponse:
    """A decoded (or to-be-encoded) infer response."""

    model_name: str
    outputs: dict[str, np.ndarray[Any, Any]]
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- decoding


def _load_json(raw: bytes | memoryview, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(400, f"{what} is not valid JSON: {exc}") from None


def _params(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(400, f"{what}: 'parameters' must be an object, got {value!r}")
    return dict(value)


def _shape(tensor: Mapping[str, Any], what: str) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ProtocolError(
            400, f"{what}: 'shape' must be a list of non-negative integers, got {shape!r}"
        )
    return tuple(shape)


def _bytes_from_buffer(buf: memoryview, count: int, what: str) -> np.ndarray[Any, Any]:
    items: list[bytes] = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(buf):
            raise ProtocolError(400, f"{what}: BYTES binary data is truncated")
        (length,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + length > len(buf):
            raise ProtocolError(400, f"{what}: BYTES binary data is truncated")
        items.append(bytes(buf[pos : pos + length]))
        pos += length
    if pos != len(buf):
        raise ProtocolError(
            400, f"{what}: BYTES binary data has {len(buf) - pos} bytes beyond {count} elements"
        )
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def _from_binary(
    buf: memoryview, datatype: str, shape: tuple[int, ...], what: str
) -> np.ndarray[Any, Any]:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_from_buffer(buf, count, what).reshape(shape)
    dtype = dtype_of(datatype)
    expected = count * dtype.itemsize
    if len(buf) != expected:
        raise ProtocolError(
            400,
            f"{what}: binary_data_size is {len(buf)} bytes but shape {list(shape)} of "
            f"{datatype} needs {expected}",
        )
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def _numbers(data: Any, dtype: np.dtype[Any], datatype: str, what: str) -> np.ndarray[Any, Any]:
    """JSON numbers as ``dtype``, refusing what a plain cast would silently change: strings
    (parsed as text), fractions into an integer type (truncated), values outside the type's
    range (wrapped, or infinity for floats), and null anywhere but in a float tensor. There
    null is NaN: JSON has no NaN or infinity, and encoders (ours, orjson's) write them as null."""
    raw = np.asarray(data)
    if raw.dtype.kind not in "biuf":
        floats = dtype.kind == "f"
        found = _non_number(raw, nulls_ok=floats)
        if found is not None:
            raise ProtocolError(
                400, f"{what}: 'data' for {datatype} must hold only numbers, found {found}"
            )
        if not floats:
            raise ProtocolError(400, f"{what}: 'data' has integers too large for {datatype}")
        try:  # nulls (and integers beyond 64 bits) into a float tensor
            with np.errstate(over="raise", invalid="raise"):
                return np.asarray(data, dtype=dtype)
        except (FloatingPointError, OverflowError):
            raise ProtocolError(
                400, f"{what}: 'data' has values too large for {datatype}"
            ) from None
    if dtype.kind in "iu" and raw.size:
        if raw.dtype.kind == "f" and not bool(np.all(np.isfinite(raw) & (raw == np.trunc(raw)))):
            raise ProtocolError(400, f"{what}: 'data' for {datatype} must hold whole numbers")
        info = np.iinfo(dtype)
        outside = ProtocolError(
            400, f"{what}: 'data' has values outside {datatype}'s range {info.min}..{info.max}"
        )
        if raw.min() < info.min or raw.max() > info.max:
            raise outside
        if raw.dtype.kind == "f":
            # whole numbers that numpy widened to float64 (say 0 next to 2**64 - 1): convert
            # the JSON integers themselves, exactly
            try:
                return np.asarray(data, dtype=dtype)
            except OverflowError:
                raise outside from None
    try:
        with np.errstate(over="raise", invalid="raise"):
            return raw.astype(dtype, copy=False)
    except FloatingPointError:
        raise ProtocolError(400, f"{what}: 'data' has values too large for {datatype}") from None


def _non_number(raw: np.ndarray[Any, Any], *, nulls_ok: bool) -> str | None:
    """The first element of a JSON array that is not a number or boolean (or null, unless
    ``nulls_ok``), for the error; None when there is none (integers beyond 64 bits, or nulls,
    make numpy fall back to objects)."""
    for value in raw.reshape(-1):
        if value is None:
            if nulls_ok:
                continue
            return "null"
        if not isinstance(value, (bool, int, float)):
            return repr(str(value)) if isinstance(value, str) else type(value).__name__
    return None


def _from_json(data: Any, datatype: str, shape: tuple[int, ...], what: str) -> np.ndarray[Any, Any]:
    dtype = dtype_of(datatype)
    if not isinstance(data, list):
        data = [data]
    try:
        if datatype == "BYTES":
            flat = np.array(data, dtype=object).reshape(-1)
            for x in flat:
                if not isinstance(x, str):
                    found = "null" if x is None else type(x).__name__
                    raise ProtocolError(
                        400, f"{what}: 'data' for BYTES must hold strings, found {found}"
                    )
            array = np.empty(flat.shape, dtype=object)
            array[:] = [x.encode() for x in flat]
        else:
            array = _numbers(data, dtype, datatype, what)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ProtocolError(400, f"{what}: 'data' is not valid {datatype}: {exc}") from None
    count = math.prod(shape)
    if array.size != count:
        raise ProtocolError(
            400,
            f"{what}: 'data' has {array.size} elements but shape {list(shape)} needs {count}",
        )
    return array.reshape(shape)


def _decode_tensors(
    raw_tensors: Any, binary: memoryview, kind: Literal["input", "output"]
) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, dict[str, Any]]]:
    """A request's ``inputs`` or a response's ``outputs``; errors name them as such."""
    if not isinstance(raw_tensors, list) or not raw_tensors:
        side = "request" if kind == "input" else "response"
        raise ProtocolError(400, f"{side} has no '{kind}s' list")
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    params_by_tensor: dict[str, dict[str, Any]] = {}
    offset = 0
    for index, tensor in enumerate(raw_tensors):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise ProtocolError(400, f"{kind}s[{index}] must be an object with a string 'name'")
        name: str = tensor["name"]
        what = f"{kind} {name!r}"
        if name in tensors:
            raise ProtocolError(400, f"{what} appears more than once")
        datatype = tensor.get("datatype")
        if not isinstance(datatype, str) or datatype not in DATATYPES:
            raise ProtocolError(
                400, f"{what}: unknown datatype {datatype!r}; expected one of {list(DATATYPES)}"
            )
        shape = _shape(tensor, what)
        params = _params(tensor.get("parameters"), what)
        size = params.pop("binary_data_size", None)
        if size is not None:
            if "data" in tensor:
                raise ProtocolError(400, f"{what} has both 'data' and binary_data_size")
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise ProtocolError(
                    400,
                    f"{what}: binary_data_size {size!r} exceeds the "
                    f"{len(binary) - offset} binary bytes left in the body",
                )
            tensors[name] = _from_binary(binary[offset : offset + size], datatype, shape, what)
            offset += size
        elif "data" in tensor:
            tensors[name] = _from_json(tensor["data"], datatype, shape, what)
        else:
            raise ProtocolError(400, f"{what} has neither 'data' nor binary_data_size")
        params_by_tensor[name] = params
    if offset != len(binary):
        raise ProtocolError(
            400, f"body has {len(binary) - offset} binary bytes not claimed by any {kind}"
        )
    return tensors, params_by_tensor


def _split_body(
    body: bytes, header_length: int | str | None, what: str = "request body"
) -> tuple[Any, memoryview]:
    view = memoryview(body)
    if header_length is None or header_length == "":
        return _load_json(view, what), view[len(view) :]
    try:
        length = int(header_length)
    except ValueError:
        raise ProtocolError(
            400, f"Inference-Header-Content-Length {header_length!r} is not an integer"
        ) from None
    if length < 0 or length > len(view):
        raise ProtocolError(
            400,
            f"Inference-Header-Content-Length {length} is outside the {len(view)}-byte body",
        )
    return _load_json(view[:length], "inference header"), view[length:]


def decode_request(body: bytes, header_length: int | str | None = None) -> InferRequest:
    """Decode an infer request body (JSON, or binary extension when ``header_length`` given).

    Input arrays decoded from binary data are read-only views of ``body``.
    """
    return parse_request(body, header_length).decode()


def parse_request(body: bytes, header_length: int | str | None = None) -> RequestHead:
    """Parse the JSON part of an infer request and check its shape, leaving tensors encoded."""
    header, binary = _split_body(body, header_length)
    if not isinstance(header, dict):
        raise ProtocolError(400, "request body must be a JSON object")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError(400, "request has no 'inputs' list")
    parameters = _params(header.get("parameters"), "request")
    binary_data_output = bool(parameters.pop("binary_data_output", False))
    outputs: list[RequestedOutput] | None = None
    raw_outputs = header.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise ProtocolError(400, "'outputs' must be a list")
        outputs = []
        for index, out in enumerate(raw_outputs):
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise ProtocolError(400, f"outputs[{index}] must be an object with a string 'name'")
            out_params = _params(out.get("parameters"), f"output {out['name']!r}")
            wish = out_params.pop("binary_data", None)
            outputs.append(
                RequestedOutput(out["name"], None if wish is None else bool(wish), out_params)
            )
    request_id = header.get("id")
    return RequestHead(
        header=header,
        binary=binary,
        outputs=outputs,
        id=None if request_id is None else str(request_id),
        parameters=parameters,
        binary_data_output=binary_data_output,
    )


# --------------------------------------------------------------------------- encoding


def _bytes_to_binary(array: np.ndarray[Any, Any]) -> bytes:
    parts: list[bytes] = []
    for item in array.reshape(-1):
        raw = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def _raw_view(array: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> bytes | memoryview:
    """The array's little-endian bytes as a flat view (a copy only if it must convert)."""
    flat = np.ascontiguousarray(array, dtype=dtype).reshape(-1)
    return flat.data.cast("B") if flat.size else b""


def tensor_bytes(array: np.ndarray[Any, Any]) -> tuple[str, bytes | memoryview]:
    """An array's OIP datatype and its binary form: little-endian elements (a view when no
    conversion is needed), BYTES elements each a 4-byte little-endian length and the bytes.
    The same bytes the binary extension carries, and gRPC's ``raw_*_contents``."""
    datatype = datatype_of(array)
    if datatype == "BYTES":
        return datatype, _bytes_to_binary(array)
    return datatype, _raw_view(array, DATATYPES[datatype])


def _json_data(array: np.ndarray[Any, Any]) -> list[Any]:
    if array.dtype.kind in "OSU":
        return [
            x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
            for x in array.reshape(-1)
        ]
    flat: list[Any] = array.reshape(-1).tolist()
    return flat


def _encode_tensors(
    tensors: Mapping[str, np.ndarray[Any, Any]],
    binary: Mapping[str, bool] | bool,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[bytes | memoryview]]:
    described: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for name, value in tensors.items():
        array = np.asarray(value)
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        params = dict(extra.get(name, {})) if extra else {}
        as_binary = binary.get(name, False) if isinstance(binary, Mapping) else binary
        if as_binary:
            # A view, not a copy: the one copy happens when the body is joined. Arrays
            # decoded from a binary body are views of it, so a step's outputs go on to the
            # next step without an intermediate bytes object.
            _, raw = tensor_bytes(array)
            params["binary_data_size"] = raw.nbytes if isinstance(raw, memoryview) else len(raw)
            chunks.append(raw)
        else:
            entry["data"] = _json_data(array)
        if params:
            entry["parameters"] = params
        described.append(entry)
    return described, chunks


def _assemble(header: dict[str, Any], chunks: list[bytes | memoryview]) -> tuple[bytes, int | None]:
    head = orjson.dumps(header)
    if not chunks:
        return head, None
    return b"".join([head, *chunks]), len(head)


def encode_response(
    response: InferResponse, binary: Mapping[str, bool] | bool = False
) -> tuple[bytes, int | None]:
    """Encode a response; returns ``(body, header_length)``.

    ``binary`` is ``True``/``False`` for all outputs or a per-output mapping (see
    :meth:`InferRequest.binary_outputs`). ``header_length`` is ``None`` for a pure JSON body,
    else the value for the ``Inference-Header-Content-Length`` response header (and the body
    should be sent as ``application/octet-stream``).
    """
    outputs, chunks = _encode_tensors(response.outputs, binary)
    header: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version is not None:
        header["model_version"] = response.model_version
    if response.id is not None:
        header["id"] = response.id
    if response.parameters:
        header["parameters"] = response.parameters
    header["outputs"] = outputs
    return _assemble(header, chunks)


def encode_request(
    inputs: Mapping[str, np.ndarray[Any, Any]],
    *,
    outputs: Iterable[str | RequestedOutput] | None = None,
    binary: bool = False,
    binary_data_output: bool = False,
    id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    input_parameters: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[bytes, int | None]:
    """Encode an infer request (clients, router, sidecar, benches); returns ``(body, header_length)``.

    ``binary`` sends inputs with the binary extension; ``binary_data_output`` asks for all
    outputs in binary unless a :class:`RequestedOutput` says otherwise. ``input_parameters``
    are each input's own parameters (as :class:`InferRequest` keeps them).
    """
    described, chunks = _encode_tensors(inputs, binary, input_parameters)
    header: dict[str, Any] = {}
    if id is not None:
        header["id"] = id
    params = dict(parameters or {})
    if binary_data_output:
        params["binary_data_output"] = True
    if params:
        header["parameters"] = params
    header["inputs"] = described
    if outputs is not None:
        wanted: list[dict[str, Any]] = []
        for out in outputs:
            if isinstance(out, str):
                wanted.append({"name": out})
                continue
            out_params = dict(out.parameters)
            if out.binary_data is not None:
                out_params["binary_data"] = out.binary_data
            wanted.append({"name": out.name, **({"parameters": out_params} if out_params else {})})
        header["outputs"] = wanted
    return _assemble(header, chunks)


def decode_response(body: bytes, header_length: int | str | None = None) -> InferResponse:
    """Decode an infer response body (JSON, or binary extension when ``header_length`` given).

    Every problem is a ``ProtocolError`` with status 502: the body came from a module, so it
    is never the client's 400."""
    try:
        header, binary = _split_body(body, header_length, "response body")
        if not isinstance(header, dict):
            raise ProtocolError(502, "response body must be a JSON object")
        if "error" in header and "outputs" not in header:
            raise ProtocolError(502, f"upstream error: {header['error']}")
        outputs, _ = _decode_tensors(header.get("outputs"), binary, "output")
        parameters = _params(header.get("parameters"), "response")
    except ProtocolError as exc:
        message = exc.message if exc.status == 502 else f"bad response: {exc.message}"
        raise ProtocolError(502, message) from None
    version = header.get("model_version")
    request_id = header.get("id")
    return InferResponse(
        model_name=str(header.get("model_name", "")),
        outputs=outputs,
        model_version=None if version is None else str(version),
        id=None if request_id is None else str(request_id),
        parameters=parameters,
    )
