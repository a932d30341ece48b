"""Audit records for privacy decisions, shared by the sidecar and the router.

Every privacy decision about a request (allow when logged, deny, tag, redact and their dry-run
forms) becomes one :class:`AuditRecord`, emitted by :func:`emit`: a single-line JSON log
record on the ``modulemesh.audit`` logger (stderr, and OpenTelemetry logs when an OTLP
endpoint is set), the same line appended to the file ``MODULEMESH_AUDIT_LOG`` names, an event
on the current span and an increment of the ``modulemesh.audit.decisions`` counter. A record
never carries the request payload: only who decided, about which tags and detectors, what
and why.

Records are tamper-evident. Each process keeps one hash chain (:class:`Chain`): a record
carries the chain's random id, its sequence number from 0, ``prev`` (the SHA-256 of the
previous record of the chain, all zeros for the first) and ``mac``, an HMAC-SHA256 of the
record's canonical JSON under the key in the file ``MODULEMESH_AUDIT_KEY_FILE`` names (the
chart mounts it from a Secret; ``null`` without a key, leaving only the hash chain).
:func:`verify` (``modulemesh audit verify``) names the first record removed, altered or
reordered. What the chain cannot show: records cut off the end of a log (nothing follows
them), and, without the key, a log rewritten from the first change on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from opentelemetry import metrics, trace

__all__ = [
    "KEY_FILE_ENV",
    "LOGGER_NAME",
    "LOG_FILE_ENV",
    "AuditRecord",
    "Chain",
    "Decision",
    "configure",
    "configure_from_env",
    "emit",
    "parse_line",
    "verify",
]

LOGGER_NAME = "modulemesh.audit"
"""Logger the JSON lines go to; processes route it to stderr with a bare ``%(message)s``."""

KEY_FILE_ENV = "MODULEMESH_AUDIT_KEY_FILE"
"""Environment variable naming the file that holds the MAC key (a mounted Secret)."""
LOG_FILE_ENV = "MODULEMESH_AUDIT_LOG"
"""Environment variable naming a file the records are appended to as JSON lines."""

_logger = logging.getLogger(LOGGER_NAME)
_counter: metrics.Counter | None = None
_GENESIS = "0" * 64


def _canonical(record: dict[str, Any]) -> bytes:
    """The bytes a record's MAC and hash cover: sorted keys, no spaces, ASCII only, so a
    verifier recomputes them from the parsed line whatever the writer's key order."""
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def read_key(path: str | Path) -> bytes:
    """The MAC key in ``path`` (trailing newline ignored); an empty file is an error."""
    key = Path(path).read_bytes().rstrip(b"\r\n")
    if not key:
        raise ValueError(f"audit key file {path} is empty")
    return key


class Chain:
    """This process's hash chain: seals each record with chain id, sequence, ``prev`` and
    ``mac``, and appends it to the log file when there is one."""

    def __init__(self, key: bytes | None = None, path: str | Path | None = None) -> None:
        self.key = key
        self.id = secrets.token_hex(8)
        self.seq = 0
        self.prev = _GENESIS
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        if path is not None:
            self._file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    @classmethod
    def from_env(cls) -> Chain:
        """The chain :data:`KEY_FILE_ENV` and :data:`LOG_FILE_ENV` describe."""
        key_file = os.environ.get(KEY_FILE_ENV)
        return cls(read_key(key_file) if key_file else None, os.environ.get(LOG_FILE_ENV) or None)

    def seal(self, body: dict[str, Any]) -> str:
        """``body`` as the chain's next record: its JSON line (appended to the file)."""
        with self._lock:
            record = {**body, "chain": self.id, "seq": self.seq, "prev": self.prev}
            mac = None
            if self.key is not None:
                mac = hmac.new(self.key, _canonical(record), hashlib.sha256).hexdigest()
            record["mac"] = mac
            self.prev = hashlib.sha256(_canonical(record)).hexdigest()
            self.seq += 1
            line = json.dumps(record, separators=(",", ":"))
            if self._file is not None:
                self._file.write(line + "\n")
            return line


_chain: Chain | None = None


def configure(chain: Chain | None) -> None:
    """Use ``chain`` for the records this process emits (``None``: read the environment
    again on the next record)."""
    global _chain
    _chain = chain


def configure_from_env() -> None:
    """Open this process's chain from :data:`KEY_FILE_ENV` and :data:`LOG_FILE_ENV` now, at
    start-up (the router and sidecar commands call it), so an unreadable key or log file stops
    the process with a ``ValueError`` naming the variable and file instead of failing the
    first request that needs a record."""
    key_file = os.environ.get(KEY_FILE_ENV)
    log_file = os.environ.get(LOG_FILE_ENV) or None
    key = None
    if key_file:
        try:
            key = read_key(key_file)
        except OSError as exc:
            raise ValueError(f"{KEY_FILE_ENV}={key_file}: {exc.strerror}") from None
        except ValueError as exc:
            raise ValueError(f"{KEY_FILE_ENV}={key_file}: {exc}") from None
    try:
        chain = Chain(key, log_file)
    except OSError as exc:
        raise ValueError(f"{LOG_FILE_ENV}={log_file}: {exc.strerror}") from None
    configure(chain)


def _current_chain() -> Chain:
    global _chain
    if _chain is None:
        _chain = Chain.from_env()
    return _chain


class Decision(StrEnum):
    """What a guard did: let it through, refuse it, or would have refused it (dry-run); for
    content detectors also: tagged the request, redacted it, or would have redacted it; for
    differential privacy: spent a principal's budget on a noisy answer, or refused one that
    would have exceeded it."""

    ALLOW = "allow"
    DENY = "deny"
    DRYRUN_DENY = "dryrun-deny"
    TAG = "tag"
    REDACT = "redact"
    DRYRUN_REDACT = "dryrun-redact"
    BUDGET_SPEND = "budget-spend"
    BUDGET_REFUSE = "budget-refuse"


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
    # Sealed whether or not the logger is on: the file and the chain must not have gaps.
    line = _current_chain().seal(record.to_dict())
    if _logger.isEnabledFor(level):
        _logger.log(level, "%s", line)
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


# -- verification -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Located:
    """One audit record as read from a log: where it is and what it says."""

    where: str
    """``FILE:LINE``."""
    record: dict[str, Any] | None
    """``None`` when the line looks like an audit record but does not parse."""


def read_records(paths: Sequence[str | Path]) -> list[Located]:
    """Every audit record of ``paths``, in order (other lines, such as logs, are skipped)."""
    found: list[Located] = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                record = parse_line(line)
                if record is None and '"kind":"audit"' not in line:
                    continue
                found.append(Located(f"{path}:{number}", record))
    return found


def verify(records: Sequence[Located], key: bytes | None) -> list[str]:
    """Problems with ``records`` (empty when the log is intact), first one first.

    Checked per chain, in log order: each record's MAC (under ``key``), its sequence number
    (the next one: else an earlier record was removed, or records were reordered when the
    missing one comes later) and its ``prev`` (the hash of the record before it). Stops at
    the first problem of each chain, since everything after it is suspect."""
    problems: list[str] = []
    by_chain: dict[str, list[Located]] = {}
    for located in records:
        record = located.record
        if record is None or not isinstance(record.get("chain"), str):
            problems.append(
                f"{located.where}: altered: not a sealed audit record (unreadable, or no chain)"
            )
            return problems
        by_chain.setdefault(record["chain"], []).append(located)
    for chain, located_records in by_chain.items():
        problem = _verify_chain(chain, located_records, key)
        if problem is not None:
            problems.append(problem)
    problems.sort(key=lambda p: _position(p, records))
    return problems


def _position(problem: str, records: Sequence[Located]) -> int:
    where = problem.split(": ", 1)[0]
    for index, located in enumerate(records):
        if located.where == where:
            return index
    return len(records)


def _verify_chain(chain: str, records: list[Located], key: bytes | None) -> str | None:
    prev = _GENESIS
    seqs = [r.record.get("seq") if r.record else None for r in records]
    # Every record before this one checked out, so the one at position n must be record n.
    for expected, located in enumerate(records):
        record = located.record
        assert record is not None
        seq = record.get("seq")
        what = f"{located.where}: record {seq} of chain {chain}"
        mac = record.get("mac")
        body = {k: v for k, v in record.items() if k != "mac"}
        if mac is not None:
            if key is None:
                return f"{what}: has a MAC but no key was given (--key-file)"
            want = hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()
            if not isinstance(mac, str) or not hmac.compare_digest(mac, want):
                return f"{what}: altered (its MAC does not match)"
        elif key is not None:
            return f"{what}: altered (no MAC, but the log is checked with a key)"
        if not isinstance(seq, int) or seq < expected:
            return f"{what}: reordered (record {expected} was expected here)"
        if seq > expected:
            later = expected in seqs[expected + 1 :]
            kind = "reordered" if later else "removed"
            return (
                f"{what}: {kind}: record {expected} of chain {chain} "
                f"{'comes later' if later else 'is missing'} before this one"
            )
        if record.get("prev") != prev:
            return f"{what}: altered (prev is not the hash of the record before it)"
        prev = hashlib.sha256(_canonical(record)).hexdigest()
    return None
