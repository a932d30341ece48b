"""Comparing two versions' answers to the same request: shadow steps and replay both ask
"do they agree?" (same per-row argmax, or every value within a tolerance) and "by how much do
they differ?" (largest absolute difference)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from modulemesh.api.graph import Agreement

__all__ = ["agree", "max_abs_error"]

Arrays = Mapping[str, np.ndarray[Any, Any]]


def _numeric(array: np.ndarray[Any, Any]) -> bool:
    return array.dtype.kind in "fiub"


def agree(first: Arrays, second: Arrays, agreement: Agreement, atol: float) -> bool:
    """Whether two answers agree on every output both have (none in common: they do not).

    ``argmax``: each row's argmax over the last axis is the same (a scalar or 1-element row
    compares its value within ``atol``); ``values``: every value within ``atol`` (NaN agrees
    with NaN). Outputs of different shape, or non-numeric outputs that differ, never agree.
    """
    names = first.keys() & second.keys()
    if not names:
        return False
    for name in names:
        a, b = np.asarray(first[name]), np.asarray(second[name])
        if a.shape != b.shape:
            return False
        if not (_numeric(a) and _numeric(b)):
            if not np.array_equal(a, b):
                return False
            continue
        if agreement is Agreement.ARGMAX and a.ndim >= 1 and a.shape[-1] > 1:
            if not np.array_equal(np.argmax(a, axis=-1), np.argmax(b, axis=-1)):
                return False
        elif not np.allclose(
            a.astype(np.float64), b.astype(np.float64), rtol=0.0, atol=atol, equal_nan=True
        ):
            return False
    return True


def max_abs_error(first: np.ndarray[Any, Any], second: np.ndarray[Any, Any]) -> float | None:
    """Largest absolute difference of two outputs of the same shape (0 where both are NaN);
    None when they cannot be compared (shape or type differs)."""
    a, b = np.asarray(first), np.asarray(second)
    if a.shape != b.shape:
        return None
    if not (_numeric(a) and _numeric(b)):
        return 0.0 if np.array_equal(a, b) else None
    if a.size == 0:
        return 0.0
    x, y = a.astype(np.float64), b.astype(np.float64)
    both_nan = np.isnan(x) & np.isnan(y)
    diff = np.where(both_nan, 0.0, np.abs(x - y))
    return float(np.max(np.nan_to_num(diff, nan=np.inf)))
