"""The health envelope of one module: its model, its two encodings, and their parsers.

A sidecar computes the envelope over a rolling window and publishes it as JSON
(``GET /envelope``, schema ``modulemesh.io/envelope/v1``) and compactly in the
``x-modulemesh-envelope`` header of every response, so that callers (the router) learn a
module's health without polling. Every writer and reader goes through this module so the two
encodings cannot drift apart (see docs/architecture.md, "Health envelope").

JSON latencies are in seconds; header latencies are in milliseconds. Unknown figures are
``null`` in JSON and ``-`` in the header. Parsers never raise anything but
:class:`EnvelopeError` (JSON) or return ``None`` (header): an envelope comes from the network.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

__all__ = [
    "HEADER_VERSION",
    "MAX_HEADER_REASON",
    "SCHEMA",
    "EnvelopeError",
    "HealthEnvelope",
    "Latency",
    "State",
    "parse_header",
]

SCHEMA = "modulemesh.io/envelope/v1"
"""Value of the ``schema`` field of the JSON form."""

HEADER_VERSION = "1"
"""Value of the ``v`` key of the compact header form."""

_MAX_HEADER_CHARS = 4096
"""Header values longer than this are refused unparsed (they are not ours)."""

MAX_HEADER_REASON = 160
"""Most characters of the reason the compact header carries (longer ones end in ``...``)."""

_REASON_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .:/()<>+-_'*!?[]@#~^|{}$&"
)
"""Printable ASCII kept as is in the header's reason; everything else (``;``, ``=``, ``,``,
``%``, quotes, controls, non-ASCII) is percent-encoded, so the ``k=v;`` syntax and proxies that
split header values on commas cannot be confused."""


class State(StrEnum):
    """Overall state of a module, derived from the envelope's figures and its thresholds."""

    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    UNHEALTHY = "Unhealthy"
    UNKNOWN = "Unknown"


class EnvelopeError(ValueError):
    """The one error :meth:`HealthEnvelope.from_dict` / :meth:`from_json` raise on bad input."""


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency percentiles over the window, in seconds (``None`` when there was no traffic)."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


@dataclass(frozen=True, slots=True)
class HealthEnvelope:
    """Health of one module over a rolling window; see docs/architecture.md for the wire forms.

    The header form carries only what a router needs per response: ``model_version``,
    ``provider``, ``window_seconds``, ``requests`` and ``errors`` are JSON-only and come back
    from :func:`parse_header` as their defaults. The ``reason`` travels too (key ``why``, cut
    to :data:`MAX_HEADER_REASON` characters, percent-encoded), so a router can say why it
    passed a module over.
    """

    module: str
    state: State = State.UNKNOWN
    reason: str = ""
    model_version: str | None = None
    provider: str | None = None
    window_seconds: float = 60.0
    request_rate: float | None = None
    latency: Latency = field(default_factory=Latency)
    error_rate: float | None = None
    queue_depth: int | None = None
    in_flight: int | None = None
    batch_fill: float | None = None
    mean_batch_size: float | None = None
    """Achieved batch size: mean rows per model call over the runtime's last 100 batches."""
    confidence: float | None = None
    denials: int = 0
    requests: int = 0
    errors: int = 0
    timestamp: float = 0.0

    # -- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of schema ``modulemesh.io/envelope/v1`` (latencies in seconds)."""
        return {
            "schema": SCHEMA,
            "module": self.module,
            "modelVersion": self.model_version,
            "provider": self.provider,
            "state": self.state.value,
            "reason": self.reason,
            "windowSeconds": self.window_seconds,
            "requestRate": self.request_rate,
            "latency": {"p50": self.latency.p50, "p95": self.latency.p95, "p99": self.latency.p99},
            "errorRate": self.error_rate,
            "queueDepth": self.queue_depth,
            "inFlight": self.in_flight,
            "batchFill": self.batch_fill,
            "meanBatchSize": self.mean_batch_size,
            "confidence": self.confidence,
            "denials": self.denials,
            "requests": self.requests,
            "errors": self.errors,
            "timestamp": self.timestamp,
        }

    def to_json(self) -> str:
        """Compact JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: object) -> HealthEnvelope:
        """Parse the JSON object form; raises :class:`EnvelopeError` on anything malformed."""
        try:
            return _from_dict(data)
        except EnvelopeError:
            raise
        except Exception as exc:  # any shape error in network input becomes one error type
            raise EnvelopeError(f"malformed envelope: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> HealthEnvelope:
        """Parse JSON text; raises :class:`EnvelopeError` on anything malformed."""
        try:
            data = json.loads(text)
        except Exception as exc:
            raise EnvelopeError(f"envelope is not JSON: {exc}") from exc
        return cls.from_dict(data)

    # -- compact header -----------------------------------------------------------------------

    def to_header(self) -> str:
        """The compact ``x-modulemesh-envelope`` value (latencies in milliseconds)."""
        lat = self.latency
        parts = [
            f"v={HEADER_VERSION}",
            f"m={_clean(self.module)}",
            f"s={self.state.value}",
            f"r={_num(self.request_rate)}",
            f"p50={_num(_ms(lat.p50))}",
            f"p95={_num(_ms(lat.p95))}",
            f"p99={_num(_ms(lat.p99))}",
            f"e={_num(self.error_rate)}",
            f"q={_num(self.queue_depth)}",
            f"f={_num(self.in_flight)}",
            f"b={_num(self.batch_fill)}",
            f"mb={_num(self.mean_batch_size, 2)}",
            f"c={_num(self.confidence)}",
            f"d={self.denials}",
            f"t={_num(self.timestamp, 3)}",
        ]
        if self.reason:
            parts.append(f"why={_encode_reason(self.reason)}")
        return ";".join(parts)

    def with_state(self, state: State, reason: str) -> HealthEnvelope:
        """A copy with another state and reason."""
        return replace(self, state=state, reason=reason)


def parse_header(value: str | bytes | None) -> HealthEnvelope | None:
    """Parse a compact header value; ``None`` for anything that is not a v1 envelope.

    Never raises. Unknown keys are ignored (forward compatible); a known key with a malformed
    value makes the whole value invalid, because a half-read envelope would mislead routing.
    """
    try:
        return _parse_header(value)
    except Exception:  # pragma: no cover - _parse_header is written not to raise; belt and braces
        return None


# -- helpers ----------------------------------------------------------------------------------


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _num(value: float | int | None, digits: int = 4) -> str:
    """Short decimal form: up to ``digits`` decimals, no trailing zeros, ``-`` for unknown."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "-"
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _clean(text: str) -> str:
    """Module names are DNS labels; drop anything that would break the ``k=v;`` syntax."""
    return "".join(ch for ch in text if ch not in ";=, \t\r\n") or "-"


def _encode_reason(reason: str) -> str:
    """The reason for the header: at most :data:`MAX_HEADER_REASON` characters, unsafe ones
    percent-encoded as UTF-8 (outer spaces dropped: the parser strips values)."""
    reason = reason.strip()
    if len(reason) > MAX_HEADER_REASON:
        reason = reason[: MAX_HEADER_REASON - 3] + "..."
    return "".join(
        ch if ch in _REASON_SAFE else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "replace"))
        for ch in reason
    )


def _decode_reason(value: str) -> str:
    """Inverse of :func:`_encode_reason`; a malformed escape makes the value invalid."""
    if len(value) > 12 * MAX_HEADER_REASON:
        raise ValueError("reason too long")
    if "%" not in value:
        return value
    out = bytearray()
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "%":
            digits = value[i + 1 : i + 3]
            if len(digits) != 2 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError(f"bad escape in reason: {value[i : i + 3]!r}")
            out.append(int(digits, 16))
            i += 3
        else:
            out += ch.encode("latin-1")
            i += 1
    return out.decode("utf-8", "replace")


def _opt_float(value: str) -> float | None:
    if value == "-":
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _opt_int(value: str) -> int | None:
    if value == "-":
        return None
    return int(value)


def _parse_header(value: str | bytes | None) -> HealthEnvelope | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("latin-1")
        except Exception:
            return None
    if not isinstance(value, str) or len(value) > _MAX_HEADER_CHARS:
        return None
    pairs: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, val = part.strip().partition("=")
        if not sep:
            return None
        pairs[key.strip()] = val.strip()
    if pairs.get("v") != HEADER_VERSION or not pairs.get("m"):
        return None
    try:
        state = State(pairs.get("s", State.UNKNOWN.value))
        p50 = _opt_float(pairs.get("p50", "-"))
        p95 = _opt_float(pairs.get("p95", "-"))
        p99 = _opt_float(pairs.get("p99", "-"))
        denials = _opt_int(pairs.get("d", "0"))
        timestamp = _opt_float(pairs.get("t", "-"))
        reason = _decode_reason(pairs.get("why", ""))
        return HealthEnvelope(
            module=pairs["m"],
            state=state,
            reason=reason,
            request_rate=_opt_float(pairs.get("r", "-")),
            latency=Latency(
                p50=None if p50 is None else p50 / 1000.0,
                p95=None if p95 is None else p95 / 1000.0,
                p99=None if p99 is None else p99 / 1000.0,
            ),
            error_rate=_opt_float(pairs.get("e", "-")),
            queue_depth=_opt_int(pairs.get("q", "-")),
            in_flight=_opt_int(pairs.get("f", "-")),
            batch_fill=_opt_float(pairs.get("b", "-")),
            mean_batch_size=_opt_float(pairs.get("mb", "-")),
            confidence=_opt_float(pairs.get("c", "-")),
            denials=denials or 0,
            timestamp=timestamp or 0.0,
        )
    except (ValueError, OverflowError, UnicodeError):
        return None


def _req(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise EnvelopeError(f"envelope lacks {key!r}")
    return _typed(data, key, kind)


def _typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise EnvelopeError(f"envelope field {key!r} has the wrong type")
    if isinstance(value, float) and not math.isfinite(value):
        raise EnvelopeError(f"envelope field {key!r} is not finite")
    return value


def _float(data: dict[str, Any], key: str) -> float | None:
    value = _typed(data, key, (int, float))
    return None if value is None else float(value)


def _int(data: dict[str, Any], key: str) -> int | None:
    value = _typed(data, key, int)
    return None if value is None else int(value)


def _from_dict(data: object) -> HealthEnvelope:
    if not isinstance(data, dict):
        raise EnvelopeError("envelope is not a JSON object")
    if data.get("schema") != SCHEMA:
        raise EnvelopeError(f"envelope schema is not {SCHEMA!r}")
    module = _req(data, "module", str)
    if not module:
        raise EnvelopeError("envelope lacks 'module'")
    latency = data.get("latency") or {}
    if not isinstance(latency, dict):
        raise EnvelopeError("envelope field 'latency' is not an object")
    try:
        state = State(data.get("state", State.UNKNOWN.value))
    except ValueError as exc:
        raise EnvelopeError(f"unknown envelope state {data.get('state')!r}") from exc
    return HealthEnvelope(
        module=module,
        state=state,
        reason=_typed(data, "reason", str) or "",
        model_version=_typed(data, "modelVersion", str),
        provider=_typed(data, "provider", str),
        window_seconds=_float(data, "windowSeconds") or 0.0,
        request_rate=_float(data, "requestRate"),
        latency=Latency(
            p50=_float(latency, "p50"), p95=_float(latency, "p95"), p99=_float(latency, "p99")
        ),
        error_rate=_float(data, "errorRate"),
        queue_depth=_int(data, "queueDepth"),
        in_flight=_int(data, "inFlight"),
        batch_fill=_float(data, "batchFill"),
        mean_batch_size=_float(data, "meanBatchSize"),
        confidence=_float(data, "confidence"),
        denials=_int(data, "denials") or 0,
        requests=_int(data, "requests") or 0,
        errors=_int(data, "errors") or 0,
        timestamp=_float(data, "timestamp") or 0.0,
    )
