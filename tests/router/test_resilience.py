"""Resilience over real processes: a killed module under bounded load (with and without a
fallback), circuit breaker open and half-open, deadlines, health-aware fallback, retries and
load shedding by priority."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from modulemesh import zoo

from .conftest import X8, Pool, Router, dead_endpoint, explain, make_graph, router, start_pool

FLAKY = {"flaky": (lambda: zoo.classifier(features=8, classes=3, temperature=0.1, seed=1), {})}


@pytest.fixture
def flaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """A module of its own, to be killed and restarted by the test."""
    p = start_pool(tmp_path_factory.mktemp("flaky"), FLAKY)
    yield p
    p.mesh.stop()


def kill_module(p: Pool, name: str, *, sidecar: bool = True) -> None:
    """SIGKILL the module's runtime (and sidecar): a crash, no drain."""
    procs = p.mesh.modules[name]
    children = [procs.runtime, procs.sidecar] if sidecar else [procs.runtime]
    for child in children:
        child.signal(signal.SIGKILL)
        child.popen.wait(10)


def restart_module(p: Pool, name: str) -> None:
    """Start the module again on the same ports and wait until it is ready."""
    p.mesh.start_module(name)
    p.mesh.wait_module(name, time.monotonic() + 60)


class Load:
    """Bounded closed-loop load: ``workers`` threads, at most ``total`` requests."""

    def __init__(self, r: Router, workers: int = 4, total: int = 200, pause: float = 0.0) -> None:
        self.r = r
        self.pause = pause
        self.total = total
        self.results: list[tuple[float, int, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers)
        self._futures = [self._pool.submit(self._worker) for _ in range(workers)]

    def _worker(self) -> None:
        body = {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [1, 8], "data": X8.ravel().tolist()}
            ]
        }
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                with self._lock:
                    if len(self.results) >= self.total:
                        return
                response = client.post(self.r.infer_url, json=body)
                error = "" if response.status_code == 200 else response.json()["error"]
                with self._lock:
                    self.results.append((time.monotonic(), response.status_code, error))
                if self.pause:
                    time.sleep(self.pause)

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.results) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def finish(self, timeout: float = 30.0) -> list[tuple[float, int, str]]:
        """Let the workers run until ``total`` requests are done (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        for f in self._futures:
            try:
                f.result(max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                self._stop.set()
        self._stop.set()
        for f in self._futures:
            f.result(30)
        self._pool.shutdown()
        return self.results


def test_killed_module_with_fallback_loses_no_request(
    pool: Pool, flaky: Pool, tmp_path: Path
) -> None:
    modules = [flaky.spec("flaky", fallback="large"), pool.spec("large")]
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "flaky"}]}]
    policy = {"retries": {"attempts": 1},
              "circuitBreaker": {"consecutiveFailures": 2, "baseEjectionMs": 200, "maxEjectionMs": 1000}}  # fmt: skip
    graph = make_graph("fb", modules, nodes, policy=policy)
    with router(tmp_path, graph, {**pool.urls, **flaky.urls}) as r:
        load = Load(r, workers=4, total=160)
        load.wait_for(40)
        kill_module(flaky, "flaky")
        results = load.finish()
        assert len(results) >= 160
        failed = [(s, e) for _, s, e in results if s != 200]
        assert not failed, failed[:3]
        after = r.infer()
        fallbacks = [e for e in explain(after) if e["event"] == "fallback"]
        assert fallbacks and fallbacks[0]["module"] == "flaky" and fallbacks[0]["to"] == "large"
        assert r.envelopes()["modules"]["flaky"]["breaker"]["ejections"] >= 1


def test_killed_module_without_fallback_errors_only_while_down_and_recovers(
    pool: Pool, flaky: Pool, tmp_path: Path
) -> None:
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "flaky"}]}]
    policy = {"retries": {"attempts": 0},
              "circuitBreaker": {"consecutiveFailures": 2, "baseEjectionMs": 200, "maxEjectionMs": 800}}  # fmt: skip
    graph = make_graph("nofb", [flaky.spec("flaky")], nodes, policy=policy)
    with router(tmp_path, graph, flaky.urls) as r:
        load = Load(r, workers=2, total=1500, pause=0.02)
        load.wait_for(30)
        killed = time.monotonic()
        kill_module(flaky, "flaky")
        time.sleep(1.0)
        restarted = time.monotonic()
        restart_module(flaky, "flaky")
        back = time.monotonic()
        time.sleep(2.0)  # longer than the capped ejection (800 ms) plus a probe
        load.wait_for(len(load.results) + 40)
        load._stop.set()
        results = load.finish()
        before = [s for t, s, _ in results if t < killed]
        assert before and all(s == 200 for s in before)
        down = [(s, e) for t, s, e in results if killed + 0.05 < t < restarted]
        assert down and all(s in (502, 503) for s, _ in down), down[:3]
        assert all("module 'flaky'" in e for _, e in down)
        assert any("ejected by the circuit breaker" in e for _, e in down)
        failures_after_back = [t for t, s, _ in results if t > back and s != 200]
        recovered_by = max(failures_after_back, default=back)
        assert recovered_by - back < 1.5, "did not recover within the capped ejection time"
        assert any(s == 200 for t, s, _ in results if back < t < back + 1.5)
        tail = [s for _, s, _ in results[-20:]]
        assert tail == [200] * 20
        assert r.envelopes()["modules"]["flaky"]["breaker"]["state"] == "closed"


def test_circuit_opens_then_half_open_probe_reejects_longer(pool: Pool, tmp_path: Path) -> None:
    dead = {"name": "dead", "model": {"path": str(pool.models["small"])}}
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "dead"}]}]
    policy = {"retries": {"attempts": 0},
              "circuitBreaker": {"consecutiveFailures": 3, "baseEjectionMs": 1000, "maxEjectionMs": 10000}}  # fmt: skip
    with router(
        tmp_path, make_graph("cb", [dead], nodes, policy=policy), {"dead": dead_endpoint()}
    ) as r:
        for _ in range(3):
            response = r.infer()
            assert response.status_code == 502
            assert "node 'main' step 'dead': module 'dead' unreachable" in response.json()["error"]
        ejected = r.infer()
        assert ejected.status_code == 503
        assert "ejected by the circuit breaker" in ejected.json()["error"]
        assert "retry-after" in ejected.headers
        breaker = r.envelopes()["modules"]["dead"]["breaker"]
        assert breaker["state"] == "open" and breaker["ejections"] == 1
        time.sleep(1.05)
        assert r.envelopes()["modules"]["dead"]["breaker"]["state"] == "half-open"
        probe = r.infer()
        assert probe.status_code == 502  # the probe went through and failed
        assert [e["outcome"] for e in explain(probe) if e["event"] == "call"] == ["error"]
        breaker = r.envelopes()["modules"]["dead"]["breaker"]
        assert breaker["state"] == "open" and breaker["ejections"] == 2
        assert breaker["ejectedForSeconds"] > 1.0  # 2 s: grown from the 1 s base
        assert r.infer().status_code == 503


def test_retries_are_explained_and_bounded(pool: Pool, tmp_path: Path) -> None:
    dead = {"name": "dead", "model": {"path": str(pool.models["small"])}}
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "dead"}]}]
    policy = {
        "retries": {"attempts": 2, "backoffMs": 5},
        "circuitBreaker": {"consecutiveFailures": 100},
    }
    with router(
        tmp_path, make_graph("rt", [dead], nodes, policy=policy), {"dead": dead_endpoint()}
    ) as r:
        response = r.infer()
        assert response.status_code == 502
        path = explain(response)
        assert [e["attempt"] for e in path if e["event"] == "call"] == [1, 2, 3]
        assert len([e for e in path if e["event"] == "retry"]) == 2
        # the budget (20% of calls, at least 3 per window) stops retrying a steady failure
        attempts = [len([e for e in explain(r.infer()) if e["event"] == "call"]) for _ in range(10)]
        assert attempts[-1] == 1, attempts


def test_deadline_exceeded_is_a_504_naming_node_and_module(pool: Pool, tmp_path: Path) -> None:
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "slow"}]}]
    graph = make_graph("dl", [pool.spec("slow")], nodes, policy={"timeoutMs": 100})
    with router(tmp_path, graph, pool.urls) as r:
        started = time.monotonic()
        response = r.infer()
        elapsed = time.monotonic() - started
        assert response.status_code == 504
        assert (
            response.json()["error"]
            == "deadline of 100 ms exceeded in node 'main' calling module 'slow'"
        )
        assert elapsed < 0.3
        # a tighter deadline from the caller wins
        response = r.infer(headers={"x-modulemesh-deadline-ms": "50"})
        assert response.status_code == 504 and "deadline of 50 ms" in response.json()["error"]


@pytest.fixture
def slow2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """A slow module of its own (300 ms batching delay), with a fresh envelope."""
    spec = {
        "slow2": (
            FLAKY["flaky"][0],
            {"batching": {"maxBatchSize": 64, "maxDelayMs": 300, "adaptive": False}},
        )
    }
    p = start_pool(tmp_path_factory.mktemp("slow2"), spec)
    yield p
    p.mesh.stop()


def test_too_slow_module_goes_to_its_fallback(pool: Pool, slow2: Pool, tmp_path: Path) -> None:
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "slow2"}]}]
    modules = [slow2.spec("slow2", timeoutMs=80, fallback="large"), pool.spec("large")]
    graph = make_graph("tooslow", modules, nodes, policy={"retries": {"attempts": 0}})
    with router(tmp_path, graph, {**pool.urls, **slow2.urls}) as r:
        response = r.infer()
        assert response.status_code == 200
        fallback = next(e for e in explain(response) if e["event"] == "fallback")
        assert fallback["to"] == "large" and "did not answer within 80 ms" in fallback["reason"]


def test_unhealthy_by_envelope_goes_to_fallback_without_calling(
    pool: Pool, flaky: Pool, tmp_path: Path
) -> None:
    kill_module(flaky, "flaky", sidecar=False)  # the sidecar stays up and reports the failures
    modules = [flaky.spec("flaky", fallback="large"), pool.spec("large")]
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "flaky"}]}]
    policy = {"retries": {"attempts": 0}, "circuitBreaker": {"consecutiveFailures": 1000}}
    with router(
        tmp_path, make_graph("env", modules, nodes, policy=policy), {**pool.urls, **flaky.urls}
    ) as r:
        deadline = time.monotonic() + 10
        reason = ""
        while time.monotonic() < deadline:
            response = r.infer()
            assert response.status_code == 200
            fb = next(e for e in explain(response) if e["event"] == "fallback")
            reason = fb["reason"]
            if "Unhealthy by its envelope" in reason:
                break
            time.sleep(0.1)
        assert "Unhealthy by its envelope" in reason
        assert not [e for e in explain(response) if e["event"] == "call" and e["module"] == "flaky"]
        assert r.envelopes()["modules"]["flaky"]["envelope"]["state"] == "Unhealthy"


def test_shedding_refuses_lowest_priority_first(pool: Pool, tmp_path: Path) -> None:
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "slow"}]}]
    graph = make_graph("shed", [pool.spec("slow")], nodes, policy={"shedding": {"maxInFlight": 4}})
    with router(tmp_path, graph, pool.urls) as r, ThreadPoolExecutor(4) as ex:
        busy = [ex.submit(r.infer, None, explain=False) for _ in range(4)]
        time.sleep(0.12)  # the four standard requests wait ~600 ms in the slow module
        sheddable = r.infer(headers={"x-modulemesh-priority": "sheddable"}, explain=False)
        standard = r.infer(headers={"x-modulemesh-priority": "standard"}, explain=False)
        critical = r.infer(headers={"x-modulemesh-priority": "critical"}, explain=False)
        assert sheddable.status_code == 429 and sheddable.headers["retry-after"] == "1"
        assert "limit for priority 'sheddable' is 2" in sheddable.json()["error"]
        assert standard.status_code == 429
        assert critical.status_code == 200
        assert [f.result().status_code for f in busy] == [200] * 4
        assert r.infer(headers={"x-modulemesh-priority": "sheddable"}).status_code == 200
        bad = r.infer(headers={"x-modulemesh-priority": "urgent"})
        assert bad.status_code == 400 and "x-modulemesh-priority" in bad.json()["error"]
