"""Tensor plumbing between steps: explicit input mapping and the ensemble merges.

A mapping that hands a step exactly the request's tensors under their own names returns the
request's :class:`~modulemesh.router.payload.ClientInputs` itself, so the call can forward the
client's bytes instead of decoding and re-encoding them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modulemesh.api.graph import MergeStrategy
from modulemesh.router.errors import RouteError

__all__ = ["map_inputs", "merge"]

from modulemesh.router.context import Tensors
from modulemesh.router.payload import ClientInputs


def map_inputs(
    mapping: Mapping[str, str] | None,
    scope: Mapping[str, Tensors],
    default: Tensors,
    where: str,
) -> Tensors:
    """The inputs of a step: ``mapping`` (target input -> ``<source>.<tensor>``) resolved in
    ``scope`` (``request`` and earlier steps), or ``default`` when there is no mapping."""
    if mapping is None:
        return default
    request = scope.get("request")
    if isinstance(request, ClientInputs) and _is_identity(mapping, request):
        return request
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name, ref in mapping.items():
        source, _, tensor = ref.partition(".")
        tensors = scope.get(source)
        if tensors is None:
            raise RouteError(
                500,
                f"{where}: input {name!r} refers to {source!r}, which has not run",
                fallback=False,
            )
        array = tensors.get(tensor)
        if array is None:
            if source == "request":
                raise RouteError(
                    400,
                    f"{where}: the request has no input {tensor!r} (needed as {name!r}); "
                    f"it has {sorted(tensors)}",
                )
            raise RouteError(
                502,
                f"{where}: input {name!r} wants {ref!r} but step {source!r} produced "
                f"{sorted(tensors)}",
            )
        out[name] = array
    return out


def _is_identity(mapping: Mapping[str, str], request: ClientInputs) -> bool:
    """Whether ``mapping`` is ``{x: "request.x"}`` for every request input and no other."""
    names = request.names()
    if len(names) != len(mapping) or set(names) != set(mapping):
        return False
    return all(mapping[name] == f"request.{name}" for name in names)


def merge(strategy: MergeStrategy, results: Sequence[tuple[str, Tensors]], where: str) -> Tensors:
    """Combine ensemble step outputs (``results`` in declared step order)."""
    if strategy is MergeStrategy.FIRST:
        return results[0][1]
    if strategy is MergeStrategy.KEYED:
        return {
            f"{step}.{name}": array for step, tensors in results for name, array in tensors.items()
        }
    names = list(results[0][1])
    for step, tensors in results[1:]:
        if set(tensors) != set(names):
            raise RouteError(
                502,
                f"{where}: cannot {strategy.value}-merge: step {results[0][0]!r} produced "
                f"{sorted(names)} but step {step!r} produced {sorted(tensors)}",
            )
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name in names:
        arrays = [tensors[name] for _, tensors in results]
        try:
            if strategy is MergeStrategy.MEAN:
                out[name] = np.mean(np.stack(arrays), axis=0).astype(arrays[0].dtype, copy=False)
            elif strategy is MergeStrategy.CONCAT:
                out[name] = np.concatenate(arrays, axis=-1)
            else:
                out[name] = _vote(arrays)
        except ValueError as exc:
            raise RouteError(
                502, f"{where}: cannot {strategy.value}-merge output {name!r}: {exc}"
            ) from None
    return out


def _vote(arrays: list[np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    """Majority vote over the last axis: each step votes for its argmax; the result holds the
    share of votes per class, so its argmax is the winner and its max the agreement.

    A tie (several classes with the most votes, e.g. two steps that disagree) is broken by
    confidence, so the argmax still names one deliberate winner: the tied classes' votes are
    re-split in proportion to the mean score the steps gave each of them. The tied total stays
    as it was (a 1:1 tie of two steps keeps a max below 1, read as low confidence), the other
    classes keep their shares. When the tied classes' mean scores are equal, or not all
    positive (logits, not probabilities), the shares stay equal and the lowest class index
    wins, as argmax picks it. See docs/architecture.md, "Ensemble merges".
    """
    stacked = np.stack(arrays)
    classes = stacked.shape[-1]
    votes = np.argmax(stacked, axis=-1)
    shares = np.eye(classes, dtype=np.float32)[votes].mean(axis=0)
    tied = shares == shares.max(axis=-1, keepdims=True)
    scores = np.where(tied, stacked.mean(axis=0, dtype=np.float64), 0.0)
    splittable = (tied.sum(axis=-1, keepdims=True) > 1) & np.all(
        ~tied | (scores > 0), axis=-1, keepdims=True
    )
    mass = np.where(tied, shares, 0.0).sum(axis=-1, keepdims=True)
    total = np.where(splittable, scores.sum(axis=-1, keepdims=True), 1.0)
    split = np.where(tied & splittable, mass * scores / total, shares)
    return np.asarray(split, dtype=np.float32)
