"""Differentially private module outputs: calibrated noise from OpenDP, charged to a budget.

A gate's ``differentialPrivacy`` names module outputs, a mechanism, the output's sensitivity
and the epsilon (and delta) one answer costs. The noise comes from OpenDP's measurements
(``then_laplace`` over an L1 space, ``then_gaussian`` over an L2 space): its samplers draw
exactly from the discretised distribution on the floating-point grid with a cryptographic RNG,
so the guarantee survives floating-point rounding (a naive ``numpy`` draw of ``x + Laplace``
leaks through the low bits, Mironov 2012). OpenDP also checks the calibration: the Laplace
scale is ``sensitivity / epsilon`` and the measurement's own privacy map must confirm it; the
Gaussian scale is the smallest OpenDP finds, by binary search over its zCDP map converted to
(epsilon, delta), that meets both.

A tensor is noised as a whole: the declared sensitivity bounds the L1 (Laplace) or L2
(Gaussian) distance between the outputs on neighbouring data, over every element of the
tensor, so one draw per element at the calibrated scale costs the declared epsilon once.
Integer tensors get OpenDP's discrete samplers, clipped to the dtype; BOOL and BYTES outputs
cannot be noised and fail closed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from modulemesh.api.gate import DpOutput, Mechanism

__all__ = ["NoiseError", "Noiser", "gaussian_scale"]


class NoiseError(ValueError):
    """An output that cannot be noised as declared (missing, not numeric, not finite)."""


@functools.cache
def _dp() -> Any:
    """OpenDP, imported once (about 0.1 s) and with its contrib features on: the Laplace and
    Gaussian measurements are contrib in OpenDP 0.x (vetted by OpenDP, not yet by proof)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


def _space(mechanism: Mechanism, integer: bool) -> tuple[Any, Any]:
    dp = _dp()
    atom = dp.atom_domain(T=int) if integer else dp.atom_domain(T=float, nan=False)
    if mechanism is Mechanism.LAPLACE:
        metric = dp.l1_distance(T=int if integer else float)
    else:
        metric = dp.l2_distance(T=int if integer else float)
    return dp.vector_domain(atom), metric


@functools.cache
def gaussian_scale(sensitivity: float, epsilon: float, delta: float) -> float:
    """The smallest Gaussian noise scale that OpenDP certifies (epsilon, delta)-DP for an
    L2 ``sensitivity``: its zCDP map converted to approximate DP, searched over the scale."""
    dp = _dp()
    space = _space(Mechanism.GAUSSIAN, False)

    def make(scale: float) -> Any:
        measurement = dp.c.make_zCDP_to_approxDP(space >> dp.m.then_gaussian(scale=scale))
        return dp.c.make_fix_delta(measurement, delta=delta)

    scale = dp.binary_search_param(make, d_in=sensitivity, d_out=(epsilon, delta))
    return float(scale)


@functools.cache
def _measurement(mechanism: Mechanism, scale: float, integer: bool) -> Any:
    """OpenDP's measurement for one mechanism and scale, built once (building costs ~1 ms)."""
    dp = _dp()
    space = _space(mechanism, integer)
    if mechanism is Mechanism.LAPLACE:
        return space >> dp.m.then_laplace(scale=scale)
    return space >> dp.m.then_gaussian(scale=scale)


@dataclass(frozen=True, slots=True)
class _Calibrated:
    mechanism: Mechanism
    scale: float


def _calibrate(out: DpOutput) -> _Calibrated:
    """The noise scale for one declared output, checked against OpenDP's privacy map."""
    if out.mechanism is Mechanism.LAPLACE:
        scale = out.sensitivity / out.epsilon
        spent = float(_measurement(Mechanism.LAPLACE, scale, False).map(out.sensitivity))
        if spent > out.epsilon * (1 + 1e-9):  # OpenDP rounds conservatively: allow its ulp
            raise NoiseError(f"OpenDP puts Laplace scale {scale} at epsilon {spent}")
        return _Calibrated(Mechanism.LAPLACE, scale)
    assert out.delta is not None
    return _Calibrated(Mechanism.GAUSSIAN, gaussian_scale(out.sensitivity, out.epsilon, out.delta))


class Noiser:
    """The noise of one module's declared outputs, calibrated once."""

    def __init__(self, module: str, outputs: list[DpOutput]) -> None:
        self.module = module
        self.outputs = outputs
        self._scales = {out.output: _calibrate(out) for out in outputs}
        self.epsilon = math.fsum(out.epsilon for out in outputs)
        """What one answer costs: the sum over its noised outputs (basic composition)."""
        self.delta = math.fsum(out.delta or 0.0 for out in outputs)

    def scales(self) -> dict[str, float]:
        """Output (``*`` for every output) -> noise scale, for explain and docs."""
        return {name or "*": cal.scale for name, cal in self._scales.items()}

    def apply(self, tensors: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """The module's outputs with noise on every declared one; raises :class:`NoiseError`
        (the answer must then not leave the router) when a declared output is missing or not
        numeric."""
        out = dict(tensors)
        every = self._scales.get(None)
        for name in self._scales:
            if name is not None and name not in tensors:
                raise NoiseError(
                    f"module {self.module!r} answered without output {name!r}, which a gate "
                    f"noises (it sent {sorted(tensors)})"
                )
        for name, array in tensors.items():
            chosen = self._scales.get(name, every)
            if chosen is not None:
                out[name] = _noised(self.module, name, array, chosen)
        return out


def _noised(
    module: str, name: str, array: np.ndarray[Any, Any], cal: _Calibrated
) -> np.ndarray[Any, Any]:
    kind = array.dtype.kind
    if kind not in "fiu":
        raise NoiseError(
            f"output {name!r} of module {module!r} is {array.dtype}, not numeric: "
            "differential privacy noises numbers only"
        )
    if array.size == 0:
        return array
    integer = kind in "iu"
    flat = array.reshape(-1)
    if not integer and not np.isfinite(flat).all():
        raise NoiseError(
            f"output {name!r} of module {module!r} holds NaN or infinity, which noise cannot hide"
        )
    measurement = _measurement(cal.mechanism, cal.scale, integer)
    values = [int(v) for v in flat] if integer else [float(v) for v in flat]
    noisy = np.asarray(measurement(values))
    if integer:
        info = np.iinfo(array.dtype)
        noisy = np.clip(noisy, info.min, info.max)
    return noisy.astype(array.dtype).reshape(array.shape)
