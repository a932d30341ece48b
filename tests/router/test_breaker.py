"""The circuit breaker's rules, on the real class with real (short) times: ejections grow
linearly (base x count, capped), a successful probe re-admits and the count decays back while
admitted, failures of calls admitted before an ejection are not counted again, and a Healthy
envelope polled after an ejection began ends it."""

from __future__ import annotations

import time

import pytest

from modulemesh.api.graph import CircuitBreakerPolicy
from modulemesh.router.resilience import Breaker, BreakerState


def breaker(failures: int = 1, base_ms: int = 100, max_ms: int = 1000) -> Breaker:
    return Breaker(
        CircuitBreakerPolicy(
            consecutive_failures=failures, base_ejection_ms=base_ms, max_ejection_ms=max_ms
        )
    )


def fail_once(b: Breaker) -> None:
    """One admitted call that fails."""
    assert b.acquire() is None
    b.failure(b.generation)


def wait_half_open(b: Breaker) -> None:
    time.sleep(b.ejected_for() + 0.005)
    assert b.state is BreakerState.HALF_OPEN


# -- growth ------------------------------------------------------------------------------------


def test_ejection_grows_by_the_base_per_ejection_up_to_the_cap() -> None:
    b = breaker(base_ms=100, max_ms=250)
    lengths = []
    for _ in range(4):
        fail_once(b)  # the first failure ejects, later ones are failed probes
        assert b.state is BreakerState.OPEN
        lengths.append(b.ejected_for())
        wait_half_open(b)
    assert lengths == pytest.approx([0.1, 0.2, 0.25, 0.25], abs=0.02)  # not 0.1, 0.2, 0.4...
    assert b.snapshot()["ejections"] == 3  # a count past the cap would not lengthen anything


def test_linear_not_doubling() -> None:
    b = breaker(base_ms=60, max_ms=10_000)
    for count in (1, 2, 3, 4):
        fail_once(b)
        assert b.ejected_for() == pytest.approx(0.06 * count, abs=0.015)
        assert b.snapshot()["ejections"] == count
        wait_half_open(b)


# -- re-admission and decay --------------------------------------------------------------------


def test_a_successful_probe_readmits_and_the_count_decays_while_admitted() -> None:
    b = breaker(base_ms=200, max_ms=10_000)
    for _ in range(3):
        fail_once(b)
        wait_half_open(b)
    assert b.acquire() is None  # the probe
    assert b.acquire() == "circuit half-open: a probe call is in flight"
    b.success(b.generation)
    assert b.state is BreakerState.CLOSED and b.acquire() is None
    assert b.snapshot()["ejections"] == 3
    # admitted for as long as the last ejection (3 x 200 ms) takes one step back; the next
    # step would take as long as the ejection before it (400 ms more)
    time.sleep(0.7)
    assert b.snapshot()["ejections"] == 2
    fail_once(b)
    assert b.ejected_for() == pytest.approx(0.6, abs=0.02)  # built on the decayed count


def test_a_released_probe_frees_the_slot() -> None:
    b = breaker(base_ms=20)
    fail_once(b)
    wait_half_open(b)
    assert b.acquire() is None
    generation = b.generation
    assert b.acquire_would_refuse()
    b.release(generation)
    assert not b.acquire_would_refuse() and b.acquire() is None


# -- generations -------------------------------------------------------------------------------


def test_failures_of_calls_admitted_before_the_ejection_are_not_counted_again() -> None:
    b = breaker(failures=2, base_ms=100)
    admitted = []
    for _ in range(6):  # six calls in flight when the module hangs
        assert b.acquire() is None
        admitted.append(b.generation)
    for generation in admitted:  # all six time out
        b.failure(generation)
    snap = b.snapshot()
    assert snap["state"] == "open" and snap["ejections"] == 1
    assert b.ejected_for() <= 0.1
    wait_half_open(b)
    assert b.acquire() is None
    b.success(b.generation)  # the probe: re-admitted
    for generation in admitted:  # late news from before the ejection changes nothing
        b.failure(generation)
        b.success(generation)
    assert b.snapshot()["state"] == "closed" and b.snapshot()["consecutiveFailures"] == 0


def test_a_stale_success_does_not_end_an_ejection() -> None:
    b = breaker(failures=1, base_ms=100)
    assert b.acquire() is None
    old = b.generation
    fail_once(b)
    b.success(old)
    assert b.state is BreakerState.OPEN


# -- envelopes ---------------------------------------------------------------------------------


def test_a_healthy_envelope_polled_after_the_ejection_began_ends_it() -> None:
    b = breaker(base_ms=10_000, max_ms=10_000)
    assert not b.envelope_healthy(time.monotonic())  # nothing to end
    polled_before = time.monotonic()
    fail_once(b)
    assert not b.envelope_healthy(polled_before)  # that poll was sent before the ejection
    assert b.state is BreakerState.OPEN
    assert b.envelope_healthy(time.monotonic())
    assert b.state is BreakerState.HALF_OPEN and b.ejected_for() == 0.0
    assert b.acquire() is None  # the probe
    b.success(b.generation)
    assert b.state is BreakerState.CLOSED
