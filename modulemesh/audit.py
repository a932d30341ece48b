"""Audit records for privacy decisions, shared by the sidecar and the router.

Every allow/deny decision about a request's compliance tags becomes one :class:`AuditRecord`,
emitted three ways by :func:`emit`: a single-line JSON log record on the ``modulemesh.audit``
logger (what auditors collect), an event on the current OpenTelemetry span (so the decision is
visible in the trace) and an increment of the ``modulemesh.audit.decisions`` counter. A record
never carries the request payload: only who decided, about which tags, what and why.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from opentelemetry import metrics, trace

__all__ = ["LOGGER_NAME", "AuditRecord", "Decision", "emit", "parse_line"]

LOGGER_NAME = "modulemesh.audit"
"""Logger the JSON lines go to; processes route it to stderr with a bare ``%(message)s``."""

_logger = logging.getLogger(LOGGER_NAME)
_counter: metrics.Counter | None = None


class Decision(StrEnum):
    """What a guard did: let it through, refuse it, or would have refused it (dry-run); for
    content detectors also: tagged the request, redacted it, or would have redacted it."""

    ALLOW = "allow"
    DENY = "deny"
    DRYRUN_DENY = "dryrun-deny"
    TAG = "tag"
    REDACT = "redact"
    DRYRUN_REDACT = "dryrun-redact"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One privacy decision. ``tags`` are the request's tags, sorted; no payload, ever."""

    component: str
    module: str
    tags: tuple[str, ...]
    decision: Decision
    reason: str
    trace_id: str | None = None
    time: float = field(default_factory=time.time)
    graph: str | None = None
    gate: str | None = None
    detectors: tuple[str, ...] = ()
    """Labels of the content detectors behind the decision (kinds, never what they found)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the log line (``kind: "audit"`` makes it easy to grep)."""
        return {
            "kind": "audit",
            "time": round(self.time, 6),
            "component": self.component,
            "module": self.module,
            "tags": list(self.tags),
            "decision": self.decision.value,
            "reason": self.reason,
            "traceId": self.trace_id,
            "graph": self.graph,
            "gate": self.gate,
            "detectors": list(self.detectors),
        }


def _decisions_counter() -> metrics.Counter:
    global _counter
    if _counter is None:
        _counter = metrics.get_meter("modulemesh.audit").create_counter(
            "modulemesh.audit.decisions",
            unit="{decision}",
            description="Privacy decisions taken, by component, module and decision.",
        )
    return _counter


def emit(
    *,
    component: str,
    module: str,
    tags: Iterable[str],
    decision: Decision,
    reason: str,
    trace_id: str | None = None,
    graph: str | None = None,
    gate: str | None = None,
    detectors: Iterable[str] = (),
) -> AuditRecord:
    """Record one decision: JSON log line + span event + counter; returns the record.

    ``trace_id`` defaults to the current span's trace id, when there is a valid one.
    """
    span = trace.get_current_span()
    if trace_id is None:
        span_context = span.get_span_context()
        if span_context.is_valid:
            trace_id = f"{span_context.trace_id:032x}"
    record = AuditRecord(
        component=component,
        module=module,
        tags=tuple(sorted(tags)),
        decision=decision,
        reason=reason,
        trace_id=trace_id,
        graph=graph,
        gate=gate,
        detectors=tuple(sorted(detectors)),
    )
    level = logging.INFO if decision is Decision.ALLOW else logging.WARNING
    if _logger.isEnabledFor(level):
        _logger.log(level, "%s", json.dumps(record.to_dict(), separators=(",", ":")))
    if span.is_recording():
        span.add_event(
            "modulemesh.audit",
            {
                "modulemesh.component": component,
                "modulemesh.module": module,
                "modulemesh.tags": list(record.tags),
                "modulemesh.decision": decision.value,
                "modulemesh.reason": reason,
            },
        )
    _decisions_counter().add(
        1,
        {
            "modulemesh.component": component,
            "modulemesh.module": module,
            "decision": decision.value,
        },
    )
    return record


def parse_line(line: str) -> dict[str, Any] | None:
    """The audit object in one log line, or ``None`` when the line is not an audit record."""
    start = line.find("{")
    if start < 0:
        return None
    try:
        data = json.loads(line[start:])
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("kind") == "audit":
        return data
    return None
