"""One ONNX model in an onnxruntime session: providers, metadata, input checks, warm-up.

onnxruntime is imported lazily (inside :func:`load`) so that importing this module, and
``modulemesh --help``, stays light.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modulemesh.oip import DATATYPES, ProtocolError
from modulemesh.runtime.cpus import available_cpus

log = logging.getLogger("modulemesh.runtime")

PLATFORM = "onnx_onnxv1"

_ORT_TYPES: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_PREFERENCE: dict[str, tuple[str, ...]] = {
    "auto": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


class ModelError(Exception):
    """The model cannot be served (bad file, unsupported types, provider missing)."""


def choose_providers(requested: str, available: Sequence[str]) -> list[str]:
    """Providers to ask onnxruntime for, best first: TensorRT (if asked), CUDA, then CPU."""
    wanted = [p for p in _PREFERENCE[requested] if p in available]
    if requested in ("cuda", "tensorrt") and wanted[:1] != [_PREFERENCE[requested][0]]:
        log.warning(
            "provider %s requested but onnxruntime offers only %s; falling back",
            requested,
            list(available),
        )
    return wanted or ["CPUExecutionProvider"]


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: OIP datatype and shape with ``-1`` for dynamic dimensions."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _spec(node: Any) -> TensorSpec:
    datatype = _ORT_TYPES.get(node.type)
    if datatype is None:
        raise ModelError(f"tensor {node.name!r} has unsupported type {node.type}")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return TensorSpec(node.name, datatype, shape)


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


class Model:
    """A loaded session with its metadata; :meth:`run` is thread-safe (onnxruntime is)."""

    def __init__(self, session: Any, name: str, version: str, intra_op_threads: int = 0) -> None:
        self.session = session
        self.name = name
        self.version = version
        self.inputs = [_spec(i) for i in session.get_inputs()]
        self.outputs = [_spec(o) for o in session.get_outputs()]
        self.output_names = [o.name for o in self.outputs]
        self.provider: str = session.get_providers()[0]
        self.intra_op_threads = intra_op_threads
        """onnxruntime intra-op threads the session was created with (0: unknown)."""
        self._by_name = {spec.name: spec for spec in self.inputs}
        self.batchable = bool(self.inputs) and all(
            len(s.shape) >= 1 and s.shape[0] == -1 for s in [*self.inputs, *self.outputs]
        )

    def metadata(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """Model metadata per the protocol, ``parameters`` carrying provider and batching."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [s.describe() for s in self.inputs],
            "outputs": [s.describe() for s in self.outputs],
            "parameters": {
                "provider": self.provider,
                "intra_op_threads": self.intra_op_threads,
                **parameters,
            },
        }

    def check(self, inputs: Mapping[str, np.ndarray[Any, Any]]) -> int:
        """Check inputs against the graph; return the batch size (rows). 400 names the input."""
        for name in inputs:
            if name not in self._by_name:
                raise ProtocolError(
                    400, f"unknown input {name!r}; the model takes {list(self._by_name)}"
                )
        rows = -1
        for spec in self.inputs:
            array = inputs.get(spec.name)
            if array is None:
                raise ProtocolError(
                    400,
                    f"missing input {spec.name!r} (expected {spec.datatype} "
                    f"{_shape_text(spec.shape)})",
                )
            if DATATYPES[spec.datatype] != array.dtype and not (
                spec.datatype == "BYTES" and array.dtype.kind == "O"
            ):
                got = "BYTES" if array.dtype.kind == "O" else _datatype_name(array)
                raise ProtocolError(
                    400,
                    f"input {spec.name!r}: expected datatype {spec.datatype}, got {got}",
                )
            if len(array.shape) != len(spec.shape) or any(
                want != -1 and want != got
                for want, got in zip(spec.shape, array.shape, strict=True)
            ):
                raise ProtocolError(
                    400,
                    f"input {spec.name!r}: expected shape {_shape_text(spec.shape)}, "
                    f"got {_shape_text(array.shape)}",
                )
            if self.batchable:
                if rows == -1:
                    rows = array.shape[0]
                elif array.shape[0] != rows:
                    raise ProtocolError(
                        400,
                        f"input {spec.name!r}: batch dimension {array.shape[0]} differs from "
                        f"the other inputs' {rows}",
                    )
        return max(rows, 1)

    def run(self, inputs: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Run the session on all outputs (blocking; call it off the event loop)."""
        feed = {
            name: (_as_strings(array) if array.dtype.kind == "O" else array)
            for name, array in inputs.items()
        }
        results = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, results, strict=True))

    def synthetic_batch(self, rows: int) -> dict[str, np.ndarray[Any, Any]]:
        """Zeros for every input, dynamic dims 1 and the batch dim ``rows``: for warm-up."""
        batch: dict[str, np.ndarray[Any, Any]] = {}
        for spec in self.inputs:
            shape = tuple(
                (rows if i == 0 and self.batchable else 1) if d == -1 else d
                for i, d in enumerate(spec.shape)
            )
            if spec.datatype == "BYTES":
                array = np.full(shape, b"", dtype=object)
            else:
                array = np.zeros(shape, dtype=DATATYPES[spec.datatype])
            batch[spec.name] = array
        return batch

    def warm_up(self, rows: int, runs: int) -> None:
        """Run synthetic batches so first real requests do not pay allocation/JIT costs."""
        batch = self.synthetic_batch(rows)
        for _ in range(runs):
            self.run(batch)
        if rows > 1 and self.batchable:
            self.run(self.synthetic_batch(1))


def _as_strings(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """BYTES (object array of bytes) -> the str array onnxruntime wants for string tensors."""
    flat = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array.flat]
    return np.array(flat, dtype=object).reshape(array.shape)


def _datatype_name(array: np.ndarray[Any, Any]) -> str:
    for name, dtype in DATATYPES.items():
        if dtype == array.dtype:
            return name
    return str(array.dtype)


def _read_identity(path: Path, name: str | None, version: str | None) -> tuple[str, str]:
    """Model name and version: flags win, else the model's metadata props, else the file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    resolved_name = name or props.get("modulemesh.model") or path.stem
    resolved_version = (
        version
        or props.get("modulemesh.version")
        or (str(proto.model_version) if proto.model_version else "1")
    )
    return resolved_name, resolved_version


def load(
    path: Path,
    *,
    name: str | None,
    version: str | None,
    provider: str,
    intra_op_threads: int,
    inter_op_threads: int,
    device_id: int,
    spinning: bool = False,
    cpu_fallback: bool = True,
) -> Model:
    """Create the onnxruntime session with the chosen providers and thread settings.

    ``intra_op_threads`` 0 means one per CPU this process may use (:func:`available_cpus`),
    not onnxruntime's one per core of the machine. With ``cpu_fallback`` False, a model that
    asked for a GPU provider and got only the CPU one is refused (:class:`ModelError`), so a
    GPU module never serves at CPU speed unnoticed.
    """
    import onnxruntime as ort

    try:
        resolved_name, resolved_version = _read_identity(path, name, version)
    except Exception as exc:
        raise ModelError(f"cannot read ONNX model {path}: {exc}") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads or available_cpus()
    options.inter_op_num_threads = inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    providers = choose_providers(provider, ort.get_available_providers())
    provider_options = [
        {"device_id": str(device_id)} if p != "CPUExecutionProvider" else {} for p in providers
    ]
    try:
        session = ort.InferenceSession(
            str(path), options, providers=providers, provider_options=provider_options
        )
    except Exception as exc:
        raise ModelError(f"onnxruntime cannot load {path}: {exc}") from exc
    model = Model(session, resolved_name, resolved_version, options.intra_op_num_threads)
    if not cpu_fallback and provider != "cpu" and model.provider == "CPUExecutionProvider":
        raise ModelError(
            f"provider {provider} requested, but onnxruntime gave only CPUExecutionProvider "
            f"(it offers {ort.get_available_providers()}) and --cpu-fallback=refuse: "
            "refusing to serve on the CPU; give the module a GPU node and a CUDA runtime "
            "image, or allow the fallback (cpuFallback: Allow)"
        )
    if not model.inputs:
        raise ModelError(f"model {path} has no inputs")
    log.info(
        "model %s version %s loaded from %s on %s with %d intra-op threads (asked %s, available %s)",
        model.name,
        model.version,
        path,
        model.provider,
        model.intra_op_threads,
        providers,
        ort.get_available_providers(),
    )
    return model
