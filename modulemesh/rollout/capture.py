"""Request capture (``spec.capture``): a bounded, privacy-gated sample of a graph's requests and
answers, one JSON line each, for ``modulemesh replay`` to send to another graph.

Which requests: those whose trace id hashes below ``rate`` (so a capture is reproducible from
the trace ids), untagged or with every tag marked ``capturable`` by every gate defining it (a
tag no gate defines is never captured: the router cannot know it is harmless). How much: at most
``maxRequests`` records and ``maxBytes`` of file, a record over ``maxRecordBytes`` skipped. The
request is captured as the modules saw it: after content redaction, never the client's original
text.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from modulemesh import oip
from modulemesh.api.gate import PrivacyGateSpec
from modulemesh.api.graph import CapturePolicy
from modulemesh.api.resolved import ResolvedGraph
from modulemesh.rollout.controller import bucket

__all__ = ["FORMAT", "Capture", "capturable"]

FORMAT = "modulemesh.capture/v1"
"""The ``format`` field of every record."""

_log = logging.getLogger("modulemesh.router")

Tensors = Mapping[str, np.ndarray[Any, Any]]


class Answer(Protocol):
    """The graph's answer as the router holds it (decoded only if captured)."""

    @property
    def tensors(self) -> Tensors: ...

    module: str


def capturable(tags: frozenset[str], gates: Mapping[str, PrivacyGateSpec]) -> bool:
    """Whether a request with ``tags`` may be captured: untagged, or each tag defined by at
    least one gate and marked ``capturable`` by every gate that defines it."""
    for tag in tags:
        definitions = [t for g in gates.values() for t in g.tags if t.name == tag]
        if not definitions or not all(t.capturable for t in definitions):
            return False
    return True


class Capture:
    """One router's capture file and its counters."""

    def __init__(
        self, graph: str, policy: CapturePolicy, gates: Mapping[str, PrivacyGateSpec]
    ) -> None:
        self.graph = graph
        self.policy = policy
        self.gates = gates
        self.path = Path(policy.path.replace("{hostname}", socket.gethostname()))
        self.captured = 0
        self.skipped: dict[str, int] = {"notSampled": 0, "tagged": 0, "tooLarge": 0, "full": 0}
        self.size = self.path.stat().st_size if self.path.exists() else 0
        self.error = ""

    @classmethod
    def of(cls, resolved: ResolvedGraph) -> Capture | None:
        """The graph's capture, or None when its spec asks for none."""
        policy = resolved.spec.capture
        return None if policy is None else cls(resolved.name, policy, resolved.gates)

    def sampled(self, trace_id: str) -> bool:
        """Whether this trace id is in the sample (cheap: the hot path asks first)."""
        return bucket("capture", trace_id) < self.policy.rate * 100.0

    def offer(
        self,
        trace_id: str,
        tags: frozenset[str],
        request: Tensors,
        parameters: Mapping[str, Any],
        answer: Answer,
    ) -> bool:
        """Write one answered request if the policy takes it; True when written."""
        if not self.sampled(trace_id):
            self.skipped["notSampled"] += 1
            return False
        if tags and not capturable(tags, self.gates):
            self.skipped["tagged"] += 1
            return False
        if self.captured >= self.policy.max_requests or self.error:
            self.skipped["full"] += 1
            return False
        body, _ = oip.encode_request(request, parameters=parameters or None)
        encoded, _ = oip.encode_response(oip.InferResponse(self.graph, dict(answer.tensors)))
        record = {
            "format": FORMAT,
            "graph": self.graph,
            "time": round(time.time(), 3),
            "traceId": trace_id,
            "module": answer.module,
            "tags": sorted(tags),
            "request": orjson.loads(body),
            "outputs": orjson.loads(encoded)["outputs"],
        }
        line = orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        if len(line) > self.policy.max_record_bytes:
            self.skipped["tooLarge"] += 1
            return False
        if self.size + len(line) > self.policy.max_bytes:
            self.skipped["full"] += 1
            return False
        try:
            with self.path.open("ab") as out:
                out.write(line)
        except OSError as exc:
            self.error = f"cannot append to {self.path}: {exc.strerror or exc}"
            _log.error("capture of graph %s stops: %s", self.graph, self.error)
            return False
        self.size += len(line)
        self.captured += 1
        return True

    def snapshot(self) -> dict[str, Any]:
        """``GET /capture``: the file, what was written and what was left out, and why."""
        return {
            "graph": self.graph,
            "path": str(self.path),
            "rate": self.policy.rate,
            "captured": self.captured,
            "bytes": self.size,
            "skipped": dict(self.skipped),
            "error": self.error,
        }
