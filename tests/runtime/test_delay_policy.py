"""The adaptive batch delay's decisions (``batching.DelayPolicy``), on an injected clock.

A lone closed-loop caller (nothing else pending when it arrives) never waits, however high
the bound; company that arrives while others are pending makes a batch wait, only as long
as its missing rows are expected to take and as lowers the summed latency of the queued rows
and the newcomers (a model whose time goes to its rows, or many rows already queued: no wait),
never past the declared bound nor past the time the
model is expected to be free; a stream that went quiet (a closed loop smaller than the
batch) stops the wait; the evidence fades on the busy clock when the load changes. The
fixed policy (``adaptive=False``) waits out the bound, as before.
"""

from __future__ import annotations

import pytest

from modulemesh.runtime.batching import DelayPolicy

MS = 0.001


def call_heavy(policy: DelayPolicy, overhead: float = 1 * MS) -> None:
    """Measurements of a model whose calls cost ``overhead`` plus 0.02 ms per row."""
    policy.ran(1, overhead + 0.02 * MS)
    policy.ran(8, overhead + 8 * 0.02 * MS)


def closed_loop(policy: DelayPolicy, callers: int, cycles: int, gap: float, run: float) -> float:
    """Drive ``callers`` closed-loop callers whose requests arrive ``gap`` apart and run as
    one batch taking ``run`` (the model's latencies are given separately); returns the clock
    at the end."""
    now = 1.0
    for _ in range(cycles):
        for _ in range(callers):
            policy.arrived(now, 1)
            now += gap
        now += run
        policy.finished(now, callers)
        now += gap
    return now


class TestLoneCaller:
    def test_never_waits_before_any_evidence(self) -> None:
        policy = DelayPolicy(max_delay_s=50 * MS, max_batch_size=32)
        policy.arrived(1.0, 1)
        assert policy.wait(1.0, 1, 1.0) == 0.0

    def test_c1_closed_loop_never_waits(self) -> None:
        policy = DelayPolicy(max_delay_s=50 * MS, max_batch_size=32)
        now = 1.0
        for _ in range(1000):
            policy.arrived(now, 1)
            assert policy.wait(now, 1, now) == 0.0
            policy.ran(1, 0.09 * MS)
            now += 0.09 * MS
            policy.finished(now, 1)
            now += 0.2 * MS  # the caller's turnaround: nothing pending meanwhile
        assert policy.company_rate() == 0.0


class TestCompany:
    def test_waits_for_the_missing_rows_at_the_measured_rate(self) -> None:
        policy = DelayPolicy(max_delay_s=10 * MS, max_batch_size=8)
        now = closed_loop(policy, callers=8, cycles=200, gap=0.05 * MS, run=0.2 * MS)
        call_heavy(policy)
        rate = policy.company_rate()
        assert 10_000 < rate < 20_000  # 7 rows of company per ~0.6 ms busy
        policy.arrived(now, 1)
        wait = policy.wait(now, 1, now)
        assert wait == pytest.approx(min(7 / rate, 3 / rate, 1 * MS), rel=0.01)
        assert wait > 0

    def test_no_wait_when_the_merge_saves_no_model_time(self) -> None:
        # All of the model's time goes to rows (0.1 ms each): running the queued rows now and
        # the newcomers next costs the model nothing more, and keeps it busy meanwhile.
        policy = DelayPolicy(max_delay_s=10 * MS, max_batch_size=8)
        now = closed_loop(policy, callers=8, cycles=200, gap=0.05 * MS, run=0.2 * MS)
        policy.ran(1, 0.1 * MS)
        policy.ran(8, 0.8 * MS)
        assert policy.merge_saving() == pytest.approx(0.0, abs=1e-12)
        assert policy.company_rate() > 10_000
        policy.arrived(now, 1)
        assert policy.wait(now, 1, now) == 0.0

    def test_the_worthwhile_wait_counts_from_when_the_batch_could_run(self) -> None:
        policy = DelayPolicy(max_delay_s=10 * MS, max_batch_size=8, quiet_gaps=1000)
        now = closed_loop(policy, callers=8, cycles=200, gap=0.05 * MS, run=0.2 * MS)
        call_heavy(policy)
        policy.arrived(now, 1)
        rate = policy.company_rate()
        worth = policy.worth_waiting(1, rate)
        # 1 ms per call, 0.02 ms per row: one queued row is worth waiting ~0.9 ms for company.
        assert worth == pytest.approx(1 * MS - 0.02 * MS - 1 / rate)
        assert policy.wait(now, 1, now, since=now) == pytest.approx(min(worth, 7 / rate))
        assert 0 < policy.wait(now + worth / 2, 1, now, since=now) <= worth / 2 + 1e-9
        assert policy.wait(now + worth + 0.01 * MS, 1, now, since=now) == 0.0

    def test_no_wait_when_many_rows_are_queued(self) -> None:
        # Sixteen rows already queued would each be late by the wait, for a saving of one call.
        policy = DelayPolicy(max_delay_s=10 * MS, max_batch_size=32)
        now = closed_loop(policy, callers=32, cycles=100, gap=0.02 * MS, run=0.5 * MS)
        call_heavy(policy, overhead=0.5 * MS)
        policy.arrived(now, 16)
        assert policy.worth_waiting(16, policy.company_rate()) < 0
        assert policy.wait(now, 16, now) == 0.0
        assert policy.wait(now, 1, now) > 0  # one queued row would be worth it

    def test_full_batch_runs_at_once(self) -> None:
        policy = DelayPolicy(max_delay_s=10 * MS, max_batch_size=8)
        now = closed_loop(policy, callers=8, cycles=50, gap=0.05 * MS, run=0.2 * MS)
        call_heavy(policy)
        assert policy.wait(now, 8, now) == 0.0

    def test_no_wait_when_not_one_row_is_expected_within_the_bound(self) -> None:
        policy = DelayPolicy(max_delay_s=0.1 * MS, max_batch_size=8)
        # Company arrives 1 ms apart while the model runs for 1 ms: 1000 rows/s of company.
        now = closed_loop(policy, callers=2, cycles=100, gap=1 * MS, run=1 * MS)
        call_heavy(policy)
        assert 0 < policy.company_rate() * 0.1 * MS < 1
        policy.arrived(now, 1)
        assert policy.wait(now, 1, now) == 0.0

    def test_never_past_the_bound(self) -> None:
        policy = DelayPolicy(max_delay_s=1 * MS, max_batch_size=64, quiet_gaps=1000)
        now = closed_loop(policy, callers=4, cycles=100, gap=0.05 * MS, run=0.2 * MS)
        call_heavy(policy, overhead=5 * MS)
        policy.arrived(now, 1)
        assert policy.wait(now, 1, now) == pytest.approx(1 * MS)
        assert policy.wait(now + 0.6 * MS, 1, now) == pytest.approx(0.4 * MS)
        assert policy.wait(now + 1 * MS, 1, now) == 0.0

    def test_not_past_the_time_the_busy_model_is_free(self) -> None:
        policy = DelayPolicy(max_delay_s=5 * MS, max_batch_size=64, quiet_gaps=1000)
        now = closed_loop(policy, callers=8, cycles=100, gap=0.02 * MS, run=0.2 * MS)
        call_heavy(policy, overhead=5 * MS)
        policy.arrived(now, 1)
        free = policy.wait(now, 1, now)
        busy = policy.wait(now, 1, now, busy_until=now + 0.1 * MS)
        assert busy == pytest.approx(0.1 * MS)
        assert free > busy

    def test_a_quiet_stream_stops_the_wait(self) -> None:
        # Eight callers cannot fill a batch of 32: after the eighth arrives, the wait ends
        # within a few gaps instead of lasting the whole bound.
        policy = DelayPolicy(max_delay_s=20 * MS, max_batch_size=32)
        now = closed_loop(policy, callers=8, cycles=200, gap=0.05 * MS, run=0.2 * MS)
        call_heavy(policy, overhead=20 * MS)
        first = now
        for _ in range(8):
            policy.arrived(now, 1)
            now += 0.05 * MS
        gap = 1 / policy.company_rate()
        assert policy.wait(now, 8, first) > 0
        assert policy.wait(now + 4 * gap, 8, first) == 0.0
        assert 4 * gap < 20 * MS

    def test_evidence_fades_when_the_load_becomes_a_lone_caller(self) -> None:
        policy = DelayPolicy(max_delay_s=1 * MS, max_batch_size=8)
        now = closed_loop(policy, callers=8, cycles=200, gap=0.05 * MS, run=0.2 * MS)
        call_heavy(policy, overhead=5 * MS)
        waited = 0.0
        for _ in range(400):
            policy.arrived(now, 1)
            wait = policy.wait(now, 1, now)
            waited += wait
            now += wait + 0.09 * MS
            policy.finished(now, 0)
            policy.finished(now, 1)
            now += 0.2 * MS
        assert policy.wait(now, 1, now) == 0.0
        # A bounded price for the change (the window is 20 ms of busy time), then none.
        assert waited < 60 * MS


class TestMeasurements:
    def test_latency_per_batch_size_and_per_row(self) -> None:
        policy = DelayPolicy(max_delay_s=1 * MS, max_batch_size=8, alpha=0.5)
        assert policy.expected_latency(4) == 0.0
        policy.ran(4, 0.4 * MS)
        policy.ran(4, 0.8 * MS)
        assert policy.expected_latency(4) == pytest.approx(0.6 * MS)
        assert policy.expected_latency(8) == pytest.approx(8 * 0.15 * MS)

    def test_merge_saving_is_the_per_call_part_of_the_latency(self) -> None:
        policy = DelayPolicy(max_delay_s=1 * MS, max_batch_size=32)
        assert policy.merge_saving() == 0.0
        policy.ran(1, 0.3 * MS)
        assert policy.merge_saving() == 0.0  # one size says nothing about the split
        policy.ran(16, 0.3 * MS + 15 * 0.1 * MS)
        assert policy.merge_saving() == pytest.approx(0.2 * MS)

    def test_idle_time_does_not_dilute_the_rate(self) -> None:
        policy = DelayPolicy(max_delay_s=1 * MS, max_batch_size=8)
        now = closed_loop(policy, callers=8, cycles=100, gap=0.05 * MS, run=0.2 * MS)
        before = policy.company_rate()
        policy.arrived(now + 60.0, 1)  # a minute with nothing pending
        assert policy.company_rate() == pytest.approx(before)


class TestFixed:
    def test_waits_out_the_bound_whoever_calls(self) -> None:
        policy = DelayPolicy(max_delay_s=2 * MS, max_batch_size=8, adaptive=False)
        policy.arrived(1.0, 1)
        assert policy.wait(1.0, 1, 1.0) == pytest.approx(2 * MS)
        assert policy.wait(1.0015, 1, 1.0) == pytest.approx(0.5 * MS)
        assert policy.wait(1.0, 8, 1.0) == 0.0

    def test_zero_bound_never_waits(self) -> None:
        for adaptive in (True, False):
            policy = DelayPolicy(max_delay_s=0.0, max_batch_size=8, adaptive=adaptive)
            closed_loop(policy, callers=8, cycles=10, gap=0.05 * MS, run=0.2 * MS)
            policy.arrived(2.0, 1)
            assert policy.wait(2.0, 1, 2.0) == 0.0
