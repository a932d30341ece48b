"""Priority classes and load shedding: under saturation the lowest priority goes first.

With ``maxInFlight`` = N: ``sheddable`` requests are admitted while fewer than N/2 requests
are in flight, ``standard`` while fewer than N, ``critical`` while fewer than 3N/2. So as
load rises, sheddable traffic is refused first, then standard; critical keeps headroom but
is still bounded, so the router cannot be driven out of memory. Refusals are 429 with
``Retry-After``.
"""

from __future__ import annotations

from modulemesh.api.graph import Priority, SheddingPolicy

__all__ = ["Shedder", "parse_priority"]

_SHARE = {Priority.SHEDDABLE: 0.5, Priority.STANDARD: 1.0, Priority.CRITICAL: 1.5}
_BY_NAME = {p.value: p for p in Priority}


def parse_priority(value: str | None, default: Priority) -> Priority | None:
    """The priority named by the header value; ``default`` when absent, None when unknown."""
    if value is None or not value.strip():
        return default
    return _BY_NAME.get(value.strip().lower())


class Shedder:
    """Counts in-flight requests and admits them by priority."""

    __slots__ = ("in_flight", "limits", "shed")

    def __init__(self, policy: SheddingPolicy) -> None:
        n = policy.max_in_flight
        self.limits = {p: max(1, int(n * share)) for p, share in _SHARE.items()}
        self.in_flight = 0
        self.shed = {p: 0 for p in Priority}

    def admit(self, priority: Priority) -> bool:
        """Take an in-flight slot, or refuse (counted) when this priority's limit is reached."""
        if self.in_flight >= self.limits[priority]:
            self.shed[priority] += 1
            return False
        self.in_flight += 1
        return True

    def done(self) -> None:
        """Give the slot back."""
        self.in_flight -= 1
