"""Every ``x-modulemesh-*`` header name, in one place (see docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Container, Iterable

TAGS = "x-modulemesh-tags"
"""Comma-separated compliance tags of the request; travels client -> router -> sidecar."""

PRIORITY = "x-modulemesh-priority"
"""``critical``, ``standard`` (default) or ``sheddable``."""

DEADLINE_MS = "x-modulemesh-deadline-ms"
"""Remaining time budget in milliseconds, relative so that clock skew does not matter."""

EXPLAIN = "x-modulemesh-explain"
"""``1`` asks the router for the path taken in the response ``parameters``."""

ENVELOPE = "x-modulemesh-envelope"
"""Compact health envelope, set by the sidecar on every response."""

BUDGET_REMAINING = "x-modulemesh-budget-remaining"
"""On a 429 for an exhausted privacy budget: ``epsilon=E;delta=D`` left in the window."""

BUDGET_RESET = "x-modulemesh-budget-reset"
"""On a 429 for an exhausted privacy budget: when the window resets (RFC 3339, UTC)."""

QUEUE_DEPTH = "x-modulemesh-queue-depth"
BATCH_SIZE = "x-modulemesh-batch-size"
PROVIDER = "x-modulemesh-provider"
MODEL_VERSION = "x-modulemesh-model-version"

NOT_PROPAGATED = frozenset(
    {
        "host", "connection", "keep-alive", "proxy-connection", "proxy-authorization",
        "transfer-encoding", "te", "trailer", "upgrade", "expect", "content-length",
        "content-type", "content-encoding", "inference-header-content-length",
        "traceparent", "tracestate",
    }
)  # fmt: skip
"""Headers a graph may not pass on to module calls (``spec.policy.propagateHeaders``): hop-by-hop
and framing headers, the ones the router writes itself, and (by prefix) ``x-modulemesh-*``,
since tags, priority and deadline are the router's to set, never a client's to smuggle through."""

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"


class HeaderError(ValueError):
    """A request header that cannot be read one way only; the message names the header."""

    def __init__(self, header: str, message: str) -> None:
        super().__init__(message)
        self.header = header
        self.message = message


def fields(
    raw: Iterable[tuple[bytes, bytes]], names: Container[bytes] | None = None
) -> dict[str, str]:
    """Header name -> value from an ASGI header list, every field line of a name joined with
    ``", "`` in order (RFC 9110 §5.3: repeated lines are one comma-separated list), so a later
    line can never replace an earlier one. ``names`` (lower-case bytes) limits what is kept."""
    out: dict[str, str] = {}
    for name, value in raw:
        if names is not None and name not in names:
            continue
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        seen = out.get(key)
        out[key] = text if seen is None else f"{seen}, {text}"
    return out


def single(name: str, value: str | None) -> str | None:
    """The one value (trimmed) of a header that is not a list (priority, deadline, explain...).

    Repeated field lines arrive joined by :func:`fields`; the same value repeated is that
    value, differing ones are ambiguous and raise :class:`HeaderError` naming the header.
    """
    if value is None or "," not in value:
        return None if value is None else value.strip()
    items = {item.strip() for item in value.split(",")}
    if len(items) == 1:
        return items.pop()
    raise HeaderError(
        name,
        f"{name} is sent more than once with different values ({value!r}); send it once",
    )


def parse_tags(value: str | None) -> frozenset[str]:
    """Parse a comma-separated tag list (e.g. a clearance flag): trimmed, lower-cased, empties
    dropped. Request headers go through :mod:`modulemesh.privacy`, which is strict."""
    if not value:
        return frozenset()
    return frozenset(tag.strip().lower() for tag in value.split(",") if tag.strip())


def format_tags(tags: frozenset[str] | set[str]) -> str:
    """Format tags for the header, sorted so the value is stable."""
    return ",".join(sorted(tags))
