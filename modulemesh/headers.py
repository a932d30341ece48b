"""Every ``x-modulemesh-*`` header name, in one place (see docs/architecture.md)."""

from __future__ import annotations

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


def parse_tags(value: str | None) -> frozenset[str]:
    """Parse a tags header value: comma-separated, trimmed, lower-cased, empties dropped."""
    if not value:
        return frozenset()
    return frozenset(tag.strip().lower() for tag in value.split(",") if tag.strip())


def format_tags(tags: frozenset[str] | set[str]) -> str:
    """Format tags for the header, sorted so the value is stable."""
    return ",".join(sorted(tags))
