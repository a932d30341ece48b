"""Small deterministic ONNX models built by code, for the examples, tests and benchmarks.

Every model has a dynamic leading batch dimension named ``batch``, float32 tensors unless
noted, weights drawn from a seeded generator (same seed, same bytes), and is written with an
``ir_version`` the installed onnxruntime can read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10
"""IR version written into every model: onnx 1.23 defaults to 14, onnxruntime 1.31 reads <= 13."""

OPSET = 17

__all__ = [
    "IR_VERSION",
    "OPSET",
    "classifier",
    "embedder",
    "identity",
    "mlp",
    "multi_input",
    "pooler",
    "save",
    "validator",
]


def _weights(seed: int, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _model(
    name: str,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
    version: str,
    opset: int = OPSET,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(
        graph,
        producer_name="modulemesh.zoo",
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = IR_VERSION
    model.model_version = int(version) if version.isdigit() else 1
    helper.set_model_props(model, {"modulemesh.version": version, "modulemesh.model": name})
    onnx.checker.check_model(model)
    return model


def _tensor(name: str, width: int | str, dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, ["batch", width])


def classifier(
    *,
    name: str = "classifier",
    features: int = 8,
    classes: int = 3,
    hidden: int = 0,
    temperature: float = 1.0,
    seed: int = 0,
    version: str = "1",
    input_name: str = "input",
    output_name: str = "probabilities",
) -> onnx.ModelProto:
    """Softmax classifier ``softmax((x @ W [-> relu -> @ W2]) / temperature)``.

    A high ``temperature`` flattens the distribution (a "small", unsure model); a low one
    sharpens it (a "large", confident model). ``hidden > 0`` adds a ReLU layer.
    """
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    current, width = input_name, features
    if hidden > 0:
        inits += [
            numpy_helper.from_array(_weights(seed + 1, (features, hidden), 0.5), "w_hidden"),
            numpy_helper.from_array(_weights(seed + 2, (hidden,), 0.1), "b_hidden"),
        ]
        nodes += [
            helper.make_node("MatMul", [current, "w_hidden"], ["h_mm"]),
            helper.make_node("Add", ["h_mm", "b_hidden"], ["h_add"]),
            helper.make_node("Relu", ["h_add"], ["h"]),
        ]
        current, width = "h", hidden
    inits += [
        numpy_helper.from_array(_weights(seed + 3, (width, classes)), "w_out"),
        numpy_helper.from_array(_weights(seed + 4, (classes,), 0.1), "b_out"),
        numpy_helper.from_array(np.array([temperature], dtype=np.float32), "temperature"),
    ]
    nodes += [
        helper.make_node("MatMul", [current, "w_out"], ["logits_mm"]),
        helper.make_node("Add", ["logits_mm", "b_out"], ["logits"]),
        helper.make_node("Div", ["logits", "temperature"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], [output_name], axis=-1),
    ]
    return _model(
        name,
        nodes,
        [_tensor(input_name, features)],
        [_tensor(output_name, classes)],
        inits,
        version,
    )


def embedder(
    *,
    name: str = "embedder",
    features: int = 16,
    dimensions: int = 8,
    seed: int = 10,
    version: str = "1",
    input_name: str = "input",
    output_name: str = "embedding",
) -> onnx.ModelProto:
    """Embedder ``tanh(x @ W)``: maps raw features to a bounded embedding."""
    inits = [numpy_helper.from_array(_weights(seed, (features, dimensions), 0.3), "w")]
    nodes = [
        helper.make_node("MatMul", [input_name, "w"], ["mm"]),
        helper.make_node("Tanh", ["mm"], [output_name]),
    ]
    return _model(
        name,
        nodes,
        [_tensor(input_name, features)],
        [_tensor(output_name, dimensions)],
        inits,
        version,
    )


def validator(
    *,
    name: str = "validator",
    classes: int = 3,
    version: str = "1",
    input_name: str = "probabilities",
    output_name: str = "score",
) -> onnx.ModelProto:
    """Validator: scores a distribution by its maximum probability, shape ``[batch, 1]``."""
    nodes = [helper.make_node("ReduceMax", [input_name], [output_name], keepdims=1, axes=[1])]
    # ReduceMax takes axes as an attribute up to opset 17.
    return _model(
        name,
        nodes,
        [_tensor(input_name, classes)],
        [_tensor(output_name, 1)],
        [],
        version,
    )


def mlp(
    *,
    name: str = "mlp",
    features: int = 256,
    hidden: int = 1024,
    layers: int = 4,
    classes: int = 10,
    seed: int = 100,
    version: str = "1",
) -> onnx.ModelProto:
    """A deeper MLP whose inference, not HTTP, dominates a batch of 32 (for benchmarks)."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    current, width = "input", features
    for layer in range(layers):
        w, b = f"w{layer}", f"b{layer}"
        inits += [
            numpy_helper.from_array(
                _weights(seed + layer, (width, hidden), 1.0 / np.sqrt(width)), w
            ),
            numpy_helper.from_array(np.zeros(hidden, dtype=np.float32), b),
        ]
        nodes += [
            helper.make_node("MatMul", [current, w], [f"mm{layer}"]),
            helper.make_node("Add", [f"mm{layer}", b], [f"add{layer}"]),
            helper.make_node("Relu", [f"add{layer}"], [f"h{layer}"]),
        ]
        current, width = f"h{layer}", hidden
    inits.append(
        numpy_helper.from_array(_weights(seed + 99, (width, classes), 1.0 / np.sqrt(width)), "wo")
    )
    nodes += [
        helper.make_node("MatMul", [current, "wo"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    return _model(
        name,
        nodes,
        [_tensor("input", features)],
        [_tensor("probabilities", classes)],
        inits,
        version,
    )


def small_mlp(*, name: str = "mlp", seed: int = 100, version: str = "1") -> onnx.ModelProto:
    """Issue 17's small submodule, MLP 256-1024-1024-10: a batch of one takes ~0.09 ms in
    onnxruntime on a quiet core, so HTTP and batching policy, not inference, set its rate."""
    return mlp(
        name=name, features=256, hidden=1024, layers=2, classes=10, seed=seed, version=version
    )


def multi_input(*, name: str = "multi", width: int = 4, version: str = "1") -> onnx.ModelProto:
    """Two inputs of different datatypes, two outputs: ``sum = a + float(b)``, ``mask = b > 0``.

    Covers mixed FP32/INT64/BOOL tensors for protocol and client-compatibility tests.
    """
    nodes = [
        helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "b_float"], ["sum"]),
        helper.make_node("Greater", ["b", "zero"], ["mask"]),
    ]
    inits = [numpy_helper.from_array(np.array(0, dtype=np.int64), "zero")]
    return _model(
        name,
        nodes,
        [_tensor("a", width), _tensor("b", width, TensorProto.INT64)],
        [_tensor("sum", width), _tensor("mask", width, TensorProto.BOOL)],
        inits,
        version,
    )


def pooler(*, name: str = "pooler", version: str = "1") -> onnx.ModelProto:
    """Mean over a dynamic ``length`` axis: ``[batch, length] -> [batch, 1]``.

    Requests with different ``length`` cannot share a batch, which batching tests rely on.
    """
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=1, axes=[1])]
    return _model(
        name,
        nodes,
        [_tensor("input", "length")],
        [_tensor("mean", 1)],
        [],
        version,
    )


def identity(
    *,
    name: str = "identity",
    elem_type: int = TensorProto.FLOAT,
    width: int = 4,
    version: str = "1",
) -> onnx.ModelProto:
    """``output = input`` for any tensor element type (``TensorProto.*``), ``[batch, width]``.

    Lets protocol tests push every datatype through a real server and get it back unchanged.
    """
    nodes = [helper.make_node("Identity", ["input"], ["output"])]
    return _model(
        name,
        nodes,
        [_tensor("input", width, elem_type)],
        [_tensor("output", width, elem_type)],
        [],
        version,
    )


def text_stats(*, name: str = "text-stats", version: str = "1") -> onnx.ModelProto:
    """A text module: ``echo`` is the ``text`` input (STRING ``[batch, 1]``) as received, and
    ``word_count`` (FP32 ``[batch, 1]``) its number of space-separated words.

    The echo shows what reached the model (a redacted address arrives as ``<EMAIL>``); the
    count is a number a gate can noise. ``StringSplit`` needs opset 20.
    """
    nodes = [
        helper.make_node("Identity", ["text"], ["echo"]),
        helper.make_node("StringSplit", ["text"], ["words", "count"], delimiter=" "),
        helper.make_node("Cast", ["count"], ["word_count"], to=TensorProto.FLOAT),
    ]
    return _model(
        name,
        nodes,
        [_tensor("text", 1, TensorProto.STRING)],
        [_tensor("echo", 1, TensorProto.STRING), _tensor("word_count", 1)],
        [],
        version,
        opset=20,
    )


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` to ``path`` (parents created) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target
