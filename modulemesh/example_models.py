"""The ONNX models the graphs in ``examples/`` reference, built on demand from the zoo.

One function, :func:`build`, so ``modulemesh models build``, the ``examples/build_models.py``
script, the tests and ``modulemesh run`` all produce the same files (deterministic: same bytes
every time). Shapes chain: the embedder maps 16 features to an 8-wide embedding, which every
classifier reads; every classifier emits 3 probabilities, which the validator scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import onnx

from modulemesh import zoo

__all__ = ["MODELS", "build", "missing"]

FEATURES = 16
EMBEDDING = 8
CLASSES = 3

MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "embedder": lambda: zoo.embedder(features=FEATURES, dimensions=EMBEDDING),
    "classifier-a": lambda: zoo.classifier(
        name="classifier-a", features=EMBEDDING, classes=CLASSES, seed=0
    ),
    "classifier-b": lambda: zoo.classifier(
        name="classifier-b", features=EMBEDDING, classes=CLASSES, seed=20
    ),
    "validator": lambda: zoo.validator(classes=CLASSES),
    # Small: one linear layer at a high temperature -> flat, unsure distributions.
    "classifier-small": lambda: zoo.classifier(
        name="classifier-small", features=EMBEDDING, classes=CLASSES, temperature=4.0, seed=30
    ),
    # Large: a hidden ReLU layer at a low temperature -> sharp, confident distributions.
    "classifier-large": lambda: zoo.classifier(
        name="classifier-large",
        features=EMBEDDING,
        classes=CLASSES,
        hidden=32,
        temperature=0.25,
        seed=40,
    ),
    # Text: echoes its input (what reached it, redacted or not) and counts its words.
    "text-stats": lambda: zoo.text_stats(),
}
"""File stem (``<stem>.onnx``) -> builder."""


def build(out: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Write the named models (all by default) into ``out``; returns the paths written.

    A file whose bytes already match is left alone, so repeated builds do not touch mtimes.
    """
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in names if names is not None else MODELS:
        if name not in MODELS:
            raise KeyError(f"no example model {name!r}; known: {', '.join(MODELS)}")
        data = MODELS[name]().SerializeToString(deterministic=True)
        path = target / f"{name}.onnx"
        if not path.is_file() or path.read_bytes() != data:
            tmp = path.with_suffix(".onnx.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        written.append(path)
    return written


def missing(paths: Iterable[str | Path]) -> list[str]:
    """Model stems among ``paths`` that this module can build but that do not exist yet."""
    stems: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.suffix == ".onnx" and path.stem in MODELS and not path.exists():
            stems.append(path.stem)
    return stems
