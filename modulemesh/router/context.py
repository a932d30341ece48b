"""Per-request state the nodes share: tensors of the request, tags, priority, deadline, trace.

One :class:`RequestContext` per request. It is a plain slotted object, built once from the
parsed headers, so the hot path allocates little; the CEL view of the request is only built
when a condition asks for it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import numpy as np

from modulemesh.api.graph import Priority
from modulemesh.cel import RequestVars, TensorVars
from modulemesh.oip import datatype_of

if TYPE_CHECKING:
    from modulemesh.router.payload import ClientInputs

__all__ = ["Output", "RawAnswer", "RequestContext", "Tensors"]

Tensors = Mapping[str, np.ndarray[Any, Any]]
"""Named tensors; the request's own are a lazily decoded :class:`ClientInputs`."""

_SHARE_ENDS: ContextVar[float] = ContextVar("modulemesh_share_ends", default=math.inf)
"""Monotonic time the running step's share of the deadline ends (:meth:`RequestContext.share`).
A context variable, so each task has its own: an ensemble's parallel steps do not see each
other's shares."""


class RawAnswer:
    """A module's response body kept as sent, already in the format the client asked for."""

    __slots__ = ("body", "header_length")

    def __init__(self, body: bytes, header_length: int | None) -> None:
        self.body = body
        self.header_length = header_length


class Output:
    """What a node or module produced: tensors, the module that made them, its confidence.

    A call whose answer is the graph's answer keeps the module's body in ``raw`` (sent to the
    client with only the model name changed); its tensors are decoded only if asked for.
    """

    __slots__ = ("_confidence", "_tensors", "confidence_output", "module", "raw")

    def __init__(
        self,
        tensors: Tensors | None,
        module: str,
        confidence_output: str | None = None,
        *,
        raw: RawAnswer | None = None,
    ) -> None:
        if tensors is None and raw is None:
            raise ValueError("Output needs tensors or a raw answer")
        self._tensors = tensors
        self.raw = raw
        self.module = module
        self.confidence_output = confidence_output
        self._confidence: float | bool | None = False  # False: not computed yet

    @property
    def tensors(self) -> Tensors:
        """The output tensors (decoded from ``raw`` on first access)."""
        if self._tensors is None:
            assert self.raw is not None
            from modulemesh.router.client import decode_answer

            self._tensors = decode_answer(self.raw, self.module)
        return self._tensors

    @property
    def confidence(self) -> float | None:
        """Lowest per-row max probability of a distribution-like output; None when unknown.

        The lowest row wins so that a batch escalates (cascade) when any row is unsure.
        """
        if self._confidence is False:
            self._confidence = _confidence(self.tensors, self.confidence_output)
        value = self._confidence
        return None if value is None or isinstance(value, bool) else value

    def cel(self) -> dict[str, Any]:
        """The CEL ``output`` variable."""
        return {
            "confidence": self.confidence,
            "outputs": {k: v.ravel().tolist() for k, v in self.tensors.items()},
            "module": self.module,
        }


def _confidence(tensors: Tensors, name: str | None) -> float | None:
    candidates = [tensors[name]] if name is not None and name in tensors else tensors.values()
    for array in candidates:
        if array.dtype.kind != "f" or array.ndim == 0 or array.size == 0:
            continue
        rows = array.reshape(-1, array.shape[-1]) if array.ndim > 1 else array.reshape(1, -1)
        if rows.shape[1] < 2 and name is None:
            continue
        if name is None and (
            float(rows.min()) < -1e-4
            or float(rows.max()) > 1 + 1e-4
            or not np.allclose(rows.sum(axis=1), 1.0, atol=1e-3)
        ):
            continue
        return float(rows.max(axis=1).min())
    return None


class RequestContext:
    """Everything about one request that nodes and calls need."""

    __slots__ = (
        "_request_vars",
        "current_node",
        "deadline",
        "explain",
        "forwarded_headers",
        "headers",
        "inputs",
        "parameters",
        "priority",
        "started",
        "tags",
        "timeout_ms",
        "trace_headers",
    )

    def __init__(
        self,
        *,
        inputs: ClientInputs,
        headers: dict[str, str],
        tags: frozenset[str],
        priority: Priority,
        parameters: dict[str, Any],
        timeout_ms: float,
        explain: bool,
        trace_headers: list[tuple[bytes, bytes]],
        forwarded_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.inputs = inputs
        """The client's tensors; ``x is ctx.inputs`` means "forward the client's bytes"."""
        self.headers = headers
        self.tags = tags
        self.priority = priority
        self.parameters = parameters
        self.started = time.monotonic()
        self.timeout_ms = timeout_ms
        self.deadline = self.started + timeout_ms / 1000.0
        self.explain: list[dict[str, Any]] | None = [] if explain else None
        self.trace_headers = trace_headers
        self.forwarded_headers = forwarded_headers or []
        """The client headers the graph propagates (``spec.policy.propagateHeaders``)."""
        self.current_node = ""
        self._request_vars: RequestVars | None = None

    def remaining(self) -> float:
        """Seconds left before the request's deadline, or before the running step's share of
        it when that ends sooner (negative once past)."""
        return min(self.deadline, _SHARE_ENDS.get()) - time.monotonic()

    @contextlib.contextmanager
    def share(self, seconds: float) -> Iterator[None]:
        """Run a step within ``seconds`` of the time left, keeping the rest for the steps
        after it (a cascade's later candidates). Everything inside (attempts, retries,
        fallbacks, the deadline sent downstream) sees the share as the deadline; shares nest."""
        token = _SHARE_ENDS.set(min(_SHARE_ENDS.get(), time.monotonic() + seconds))
        try:
            yield
        finally:
            _SHARE_ENDS.reset(token)

    def note(self, event: str, **fields: Any) -> None:
        """Add one entry to the explain trace (a no-op unless explain was asked for)."""
        if self.explain is not None:
            self.explain.append({"event": event, **fields})

    def request_vars(self) -> RequestVars:
        """The CEL ``request`` variable, built on first use."""
        if self._request_vars is None:
            inputs: dict[str, TensorVars] = {
                name: {
                    "shape": list(array.shape),
                    "datatype": datatype_of(array),
                    "data": array.ravel().tolist(),
                }
                for name, array in self.inputs.items()
            }
            self._request_vars = {
                "headers": self.headers,
                "tags": sorted(self.tags),
                "priority": self.priority.value,
                "parameters": self.parameters,
                "inputs": inputs,
            }
        return self._request_vars
