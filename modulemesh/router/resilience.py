"""Circuit breaking with outlier ejection, and the retry budget.

A module that fails ``consecutiveFailures`` calls in a row is ejected for ``baseEjectionMs``
times its consecutive-ejection count, capped at ``maxEjectionMs`` (Envoy's outlier detection):
a long outage grows the ejections step by step, not by doubling. When an ejection ends the
breaker is half-open: exactly one probe call goes through; success re-admits the module,
failure ejects it again for one step longer. A Healthy envelope polled from the module after
the ejection began ends the ejection at once (the next call is the probe). After
re-admission the count decays one step for every stretch of admitted time as long as the
ejection that step stands for, so it falls back at the pace it grew.

Every ejection starts a new generation. A call's verdict counts only if the call was
admitted in the current generation: calls that were already in flight when the breaker
opened fail for the same outage that opened it, and counting them again (as their timeouts
come in, while open or after re-admission) would eject the module again for nothing.

Retries are allowed only while retries stay within ``budgetPercent`` of the calls in a
sliding 10-second window (at least a few per window, so a quiet graph can still retry once),
which keeps retries from multiplying load on a module that is already failing.
"""

from __future__ import annotations

import math
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
    """The circuit breaker of one module.

    A caller takes :attr:`generation` right after :meth:`acquire` admits it and hands it back
    with the call's verdict (:meth:`success`, :meth:`failure`, :meth:`release`).
    """

    __slots__ = (
        "_admitted_at",
        "_base",
        "_cap",
        "_count",
        "_ejected",
        "_ejected_at",
        "_failures",
        "_generation",
        "_max",
        "_open_until",
        "_probing",
        "_threshold",
    )

    def __init__(self, policy: CircuitBreakerPolicy) -> None:
        self._base = policy.base_ejection_ms / 1000.0
        self._max = policy.max_ejection_ms / 1000.0
        self._cap = max(1, math.ceil(self._max / self._base))
        """Counts beyond this would not lengthen an ejection (it is capped)."""
        self._threshold = policy.consecutive_failures
        self._failures = 0
        self._count = 0
        """Consecutive ejections, as of ``_admitted_at`` (decays while admitted)."""
        self._ejected = False
        """From an ejection until a probe succeeds (open, then half-open)."""
        self._ejected_at = 0.0
        self._open_until = 0.0
        self._admitted_at = 0.0
        self._probing = False
        self._generation = 0

    @property
    def generation(self) -> int:
        """The generation a call admitted now belongs to (see the module docstring)."""
        return self._generation

    @property
    def state(self) -> BreakerState:
        """Closed, open (ejected) or half-open (ejection over, next call is a probe)."""
        if not self._ejected:
            return BreakerState.CLOSED
        if time.monotonic() < self._open_until:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def ejected_for(self) -> float:
        """Seconds until the ejection ends (0 when not ejected)."""
        return max(0.0, self._open_until - time.monotonic()) if self._ejected else 0.0

    def ejection_count(self) -> int:
        """Consecutive ejections the next one builds on (after decay while admitted)."""
        if self._ejected:
            return self._count
        return self._decayed(time.monotonic())

    def acquire(self) -> str | None:
        """Whether a call may go now: ``None`` if yes, else why not.

        In half-open state the first caller becomes the probe; others are refused until the
        probe reports back.
        """
        if not self._ejected:
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
        if not self._ejected:
            return False
        return time.monotonic() < self._open_until or self._probing

    def success(self, generation: int) -> None:
        """A call admitted in ``generation`` succeeded: the run of failures ends, and a
        successful probe re-admits the module."""
        if generation != self._generation:
            return  # admitted before the last ejection: says nothing about now
        self._failures = 0
        if self._ejected:
            self._ejected = False
            self._probing = False
            self._admitted_at = time.monotonic()

    def failure(self, generation: int) -> None:
        """A call admitted in ``generation`` failed in a way that counts (unreachable, 5xx,
        timeout). Failures of calls admitted before the last ejection are not counted."""
        if generation != self._generation:
            return
        if self._ejected:  # the probe (the only call admitted while ejected)
            self._probing = False
            self._eject(time.monotonic())
            return
        self._failures += 1
        if self._failures >= self._threshold:
            self._eject(time.monotonic())

    def release(self, generation: int) -> None:
        """A call ended without a verdict (cancelled, 4xx): a probe slot is freed."""
        if generation == self._generation:
            self._probing = False

    def envelope_healthy(self, polled_at: float) -> bool:
        """A Healthy envelope was polled (request sent at monotonic ``polled_at``): if that was
        after the ejection began, the ejection ends now and the next call is the probe.
        Returns whether an ejection was ended."""
        now = time.monotonic()
        if not self._ejected or polled_at < self._ejected_at or now >= self._open_until:
            return False
        self._open_until = now
        return True

    def _decayed(self, now: float) -> int:
        """The count after decay: admitted for as long as the ejection a step stands for
        takes that step back."""
        count = self._count
        admitted = now - self._admitted_at
        while count > 0:
            step = min(self._base * count, self._max)
            if admitted < step:
                break
            admitted -= step
            count -= 1
        return count

    def _eject(self, now: float) -> None:
        count = self._count if self._ejected else self._decayed(now)
        self._count = min(count + 1, self._cap)
        self._ejected = True
        self._ejected_at = now
        self._open_until = now + min(self._base * self._count, self._max)
        self._failures = 0
        self._generation += 1

    def snapshot(self) -> dict[str, object]:
        """For ``/envelopes`` and explain output."""
        return {
            "state": self.state.value,
            "consecutiveFailures": self._failures,
            "ejections": self.ejection_count(),
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
