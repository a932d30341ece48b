"""Circuit breaking with outlier ejection, and the retry budget.

A module that fails ``consecutiveFailures`` times in a row is ejected for
``baseEjectionMs * 2**(ejections-1)``, capped at ``maxEjectionMs``. When the ejection ends
the breaker is half-open: exactly one probe call goes through; success closes it (and resets
the growth), failure ejects it again for longer. Retries are allowed only while retries stay
within ``budgetPercent`` of the calls in a sliding 10-second window (at least a few per
window, so a quiet graph can still retry once), which keeps retries from multiplying load
on a module that is already failing.
"""

from __future__ import annotations

import time
from enum import StrEnum

from modulemesh.api.graph import CircuitBreakerPolicy, RetryPolicy

__all__ = ["Breaker", "BreakerState", "RetryBudget"]


class BreakerState(StrEnum):
    """Where a module's breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class Breaker:
    """The circuit breaker of one module."""

    __slots__ = ("_ejections", "_failures", "_open_until", "_policy", "_probing")

    def __init__(self, policy: CircuitBreakerPolicy) -> None:
        self._policy = policy
        self._failures = 0
        self._ejections = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """Closed, open (ejected) or half-open (ejection over, next call is a probe)."""
        if self._ejections == 0:
            return BreakerState.CLOSED
        if time.monotonic() < self._open_until:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def ejected_for(self) -> float:
        """Seconds until the ejection ends (0 when not ejected)."""
        return max(0.0, self._open_until - time.monotonic()) if self._ejections else 0.0

    def acquire(self) -> str | None:
        """Whether a call may go now: ``None`` if yes, else why not.

        In half-open state the first caller becomes the probe; others are refused until the
        probe reports back.
        """
        if self._ejections == 0:
            return None
        now = time.monotonic()
        if now < self._open_until:
            return f"ejected by the circuit breaker for another {self._open_until - now:.2f}s"
        if self._probing:
            return "circuit half-open: a probe call is in flight"
        self._probing = True
        return None

    def acquire_would_refuse(self) -> bool:
        """Whether :meth:`acquire` would refuse now (without taking a probe slot)."""
        if self._ejections == 0:
            return False
        return time.monotonic() < self._open_until or self._probing

    def success(self) -> None:
        """A call succeeded: the breaker closes."""
        self._failures = 0
        self._ejections = 0
        self._probing = False

    def failure(self) -> None:
        """A call failed in a way that counts (unreachable, 5xx, timeout)."""
        if self._ejections and self._probing:
            self._probing = False
            self._eject()
            return
        self._failures += 1
        if self._failures >= self._policy.consecutive_failures:
            self._eject()

    def release(self) -> None:
        """A call ended without a verdict (cancelled, 4xx): a probe slot is freed."""
        self._probing = False

    def _eject(self) -> None:
        self._ejections += 1
        self._failures = 0
        base = self._policy.base_ejection_ms * (2 ** min(self._ejections - 1, 30))
        self._open_until = time.monotonic() + min(base, self._policy.max_ejection_ms) / 1000.0

    def snapshot(self) -> dict[str, object]:
        """For ``/envelopes`` and explain output."""
        return {
            "state": self.state.value,
            "consecutiveFailures": self._failures,
            "ejections": self._ejections,
            "ejectedForSeconds": round(self.ejected_for(), 3),
        }


class RetryBudget:
    """Retries allowed as a share of calls over a sliding window (two 5-second halves)."""

    __slots__ = ("_calls", "_min", "_percent", "_prev_calls", "_prev_retries", "_retries", "_slot")

    WINDOW_HALF = 5.0

    def __init__(self, policy: RetryPolicy, minimum: int = 3) -> None:
        self._percent = policy.budget_percent / 100.0
        self._min = minimum
        self._slot = 0
        self._calls = self._retries = 0
        self._prev_calls = self._prev_retries = 0

    def _roll(self) -> None:
        slot = int(time.monotonic() / self.WINDOW_HALF)
        if slot != self._slot:
            if slot == self._slot + 1:
                self._prev_calls, self._prev_retries = self._calls, self._retries
            else:
                self._prev_calls = self._prev_retries = 0
            self._calls = self._retries = 0
            self._slot = slot

    def call(self) -> None:
        """Count a first attempt."""
        self._roll()
        self._calls += 1

    def try_retry(self) -> bool:
        """Take a retry from the budget if one is left."""
        self._roll()
        calls = self._calls + self._prev_calls
        retries = self._retries + self._prev_retries
        if self._percent <= 0:
            return False
        if retries < self._min or retries < calls * self._percent:
            self._retries += 1
            return True
        return False
