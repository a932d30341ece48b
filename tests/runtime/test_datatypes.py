"""Every OIP datatype through a real runtime and back, JSON and binary, with tritonclient.

One ``zoo.identity`` model per datatype (all numeric types onnxruntime supports, BOOL and
BYTES/string); the runtimes start together to keep the test short.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as triton
from onnx import TensorProto

from modulemesh import zoo
from tests.runtime.conftest import Runtime

TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def _values(datatype: str) -> np.ndarray[Any, Any]:
    if datatype == "BOOL":
        return np.array([[True, False, True, True], [False, False, True, False]])
    if datatype == "BYTES":
        return np.array([[b"a", b"bc", b"", b"\xc3\xa9"], [b"x", b"y", b"z", b"w"]], dtype=object)
    info = np.iinfo if datatype[0] in "UI" else np.finfo
    dtype = triton.triton_to_np_dtype(datatype)
    top = info(dtype).max
    return np.array([[0, 1, 2, top], [3, 4, 5, 6]], dtype=dtype)


def test_every_datatype_round_trips(tmp_path: Path, start_runtime: Callable[..., Runtime]) -> None:
    runtimes = {}
    for datatype, elem_type in TYPES.items():
        name = f"id-{datatype.lower()}"
        path = zoo.save(zoo.identity(name=name, elem_type=elem_type), tmp_path / f"{name}.onnx")
        runtimes[datatype] = start_runtime("--model", str(path), ready=False)
    for datatype, runtime in runtimes.items():
        runtime.wait_ready(timeout=120)
        name = f"id-{datatype.lower()}"
        meta = runtime.client.get(f"/v2/models/{name}").json()
        assert meta["inputs"][0]["datatype"] == datatype
        client = triton.InferenceServerClient(runtime.url.removeprefix("http://"))
        try:
            values = _values(datatype)
            for binary in (False, True):
                tensor = triton.InferInput("input", list(values.shape), datatype)
                tensor.set_data_from_numpy(values, binary_data=binary)
                out = triton.InferRequestedOutput("output", binary_data=binary)
                got = client.infer(name, [tensor], outputs=[out]).as_numpy("output")
                if datatype == "BYTES":
                    got = np.vectorize(lambda v: v if isinstance(v, bytes) else v.encode())(got)
                assert got.tolist() == values.tolist(), (datatype, binary)
                assert got.shape == values.shape
        finally:
            client.close()
