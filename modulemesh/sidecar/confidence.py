"""Prediction confidence from an infer response body (decoded with :mod:`modulemesh.oip`).

Confidence of a row is its maximum probability. Without a declared output, the first output
that looks like a distribution is used: floating point, last axis of at least two classes,
every value in [0, 1] and every row summing to 1 (within 1e-3). With a declared output, that
output's per-row maximum is used whatever it holds (e.g. a validator's ``score``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modulemesh import oip

__all__ = ["confidence_of"]

_SUM_TOLERANCE = 1e-3


def confidence_of(
    body: bytes, header_length: bytes | None, output: str | None
) -> tuple[float, int] | None:
    """``(sum of per-row confidences, rows)`` for a response body, or ``None`` if it has none.

    Never raises: a body the sidecar cannot read has no confidence, it is not an error.
    """
    try:
        response = oip.decode_response(
            body, None if header_length is None else header_length.decode("latin-1")
        )
    except Exception:
        return None
    if output is not None:
        array = response.outputs.get(output)
        return None if array is None else _row_max(array, require_distribution=False)
    for array in response.outputs.values():
        found = _row_max(array, require_distribution=True)
        if found is not None:
            return found
    return None


def _row_max(
    array: np.ndarray[Any, Any], *, require_distribution: bool
) -> tuple[float, int] | None:
    if array.dtype.kind != "f" or array.size == 0:
        return None
    rows = array.reshape(-1, array.shape[-1]) if array.ndim >= 1 else array.reshape(1, 1)
    if require_distribution:
        if rows.shape[1] < 2:
            return None
        if float(rows.min()) < 0.0 or float(rows.max()) > 1.0 + _SUM_TOLERANCE:
            return None
        if not np.allclose(rows.sum(axis=1), 1.0, atol=_SUM_TOLERANCE, rtol=0.0):
            return None
    maxima = rows.max(axis=1)
    if not np.all(np.isfinite(maxima)):
        return None
    return float(maxima.sum()), int(maxima.shape[0])
