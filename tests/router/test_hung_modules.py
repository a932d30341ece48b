"""A hung module (its runtime or sidecar stopped with SIGSTOP, resumed with SIGCONT), through
a real router: the circuit breaker ejects it once for the calls that were in flight, lets it
back in promptly when the outage ends (by a successful probe, or at once on a Healthy polled
envelope), and a cascade escalates past a hung cheap candidate within the request's deadline,
giving each candidate only its share of the time left."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from modulemesh import zoo

from .conftest import X8, Pool, Router, explain, make_graph, router, start_pool

MODELS = {
    "hung": (lambda: zoo.classifier(features=8, classes=3, temperature=0.1, seed=1), {}),
    "backup": (lambda: zoo.classifier(features=8, classes=3, temperature=0.1, seed=2), {}),
}


@pytest.fixture
def mods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """Modules of their own: ``hung`` is stopped and resumed by the test, and its sidecar's
    error-rate window starts empty."""
    p = start_pool(tmp_path_factory.mktemp("hung"), MODELS)
    yield p
    p.mesh.stop()


@contextlib.contextmanager
def frozen(p: Pool, part: str = "runtime") -> Iterator[Callable[[], float]]:
    """SIGSTOP the ``hung`` module's runtime or sidecar: the kernel still accepts connections,
    nothing answers. Yields ``thaw()`` (SIGCONT, returns when); it is thawed at exit anyway."""
    child = getattr(p.mesh.modules["hung"], part)
    child.signal(signal.SIGSTOP)
    state = {"thawed": 0.0}

    def thaw() -> float:
        if not state["thawed"]:
            child.signal(signal.SIGCONT)
            state["thawed"] = time.monotonic()
        return state["thawed"]

    try:
        yield thaw
    finally:
        thaw()


def sequence(module: str) -> list[dict[str, Any]]:
    return [{"name": "main", "type": "sequence", "steps": [{"module": module}]}]


def breaker(r: Router) -> dict[str, Any]:
    state: dict[str, Any] = r.envelopes()["modules"]["hung"]["breaker"]
    return state


def first_success(r: Router, within: float) -> float | None:
    """Ask every 50 ms until a 200; when it came (monotonic), or None after ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if r.infer(explain=False, timeout=10).status_code == 200:
            return time.monotonic()
        time.sleep(0.05)
    return None


class Load:
    """``workers`` threads asking in a loop (``pause`` s apart) until stopped; records
    (monotonic time, status) of every answer."""

    def __init__(self, r: Router, workers: int, pause: float) -> None:
        self.results: list[tuple[float, int]] = []
        self._stop = threading.Event()
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8],
                            "data": X8.ravel().tolist()}]}  # fmt: skip

        def work() -> None:
            with httpx.Client(timeout=10) as client:
                while not self._stop.is_set():
                    status = client.post(r.infer_url, json=body).status_code
                    self.results.append((time.monotonic(), status))
                    time.sleep(pause)

        self._threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
        for t in self._threads:
            t.start()

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.results) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        return sorted(self.results)


# -- circuit breaker ---------------------------------------------------------------------------


def test_calls_in_flight_when_a_module_hangs_eject_it_once(mods: Pool, tmp_path: Path) -> None:
    policy = {"callTimeoutMs": 400, "retries": {"attempts": 0},
              "circuitBreaker": {"consecutiveFailures": 2, "baseEjectionMs": 1500}}  # fmt: skip
    graph = make_graph("once", [mods.spec("hung")], sequence("hung"), policy=policy)
    with router(tmp_path, graph, mods.urls) as r:
        assert r.infer().status_code == 200
        with frozen(mods) as thaw, ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: r.infer(explain=False), range(6)))
            failed = time.monotonic()
            statuses = [a.status_code for a in answers]
            # admitted before the breaker opened, they all wait out their timeout
            assert statuses.count(504) >= 4 and set(statuses) <= {503, 504}, statuses
            state = breaker(r)
            # two failures opened it; the others were in flight already and are not counted
            # again (they used to eject it twice more, for 3 s and then 6 s)
            assert state["state"] == "open" and state["ejections"] == 1, state
            assert state["ejectedForSeconds"] <= 1.5
            thaw()
        back = first_success(r, within=6.0)
        assert back is not None
        assert back - failed < 1.5 + 1.0  # the one base ejection, then the probe got through
        assert breaker(r)["state"] == "closed"


def test_a_module_back_from_an_outage_is_readmitted_promptly(mods: Pool, tmp_path: Path) -> None:
    policy = {"callTimeoutMs": 300, "retries": {"attempts": 0},
              "circuitBreaker": {"consecutiveFailures": 2, "baseEjectionMs": 300}}  # fmt: skip
    graph = make_graph("outage", [mods.spec("hung")], sequence("hung"), policy=policy)
    with router(tmp_path, graph, mods.urls) as r:
        load = Load(r, workers=8, pause=0.05)
        try:
            load.wait_for(40)
            freeze = time.monotonic()
            with frozen(mods) as thaw:
                time.sleep(3.0)
                at_thaw = breaker(r)
                thawed = thaw()
            time.sleep(3.5)
        finally:
            results = load.stop()
    before = [s for t, s in results if t < freeze]
    assert before and set(before) == {200}
    down = [s for t, s in results if freeze + 0.1 < t < thawed]
    assert down and set(down) <= {503, 504}, set(down)
    # ejections grew by the base per failed probe (0.3, 0.6, 0.9 ... s), not doubling at each
    # wave of timed-out calls: what is left at the end of the outage is short
    assert at_thaw["ejections"] <= 5 and at_thaw["ejectedForSeconds"] <= 1.5, at_thaw
    ok_after = [t for t, s in results if t > thawed and s == 200]
    assert ok_after and ok_after[0] - thawed < 2.5, "not re-admitted promptly"
    late_failures = [(t - thawed, s) for t, s in results if t > thawed + 2.5 and s != 200]
    assert not late_failures, late_failures[:5]


def test_a_healthy_envelope_ends_an_ejection_early(mods: Pool, tmp_path: Path) -> None:
    policy = {"callTimeoutMs": 400, "retries": {"attempts": 0},
              "circuitBreaker": {"consecutiveFailures": 2, "baseEjectionMs": 20_000,
                                 "maxEjectionMs": 20_000}}  # fmt: skip
    graph = make_graph("healthy", [mods.spec("hung")], sequence("hung"), policy=policy)
    with router(tmp_path, graph, mods.urls, poll_interval=0.5) as r:
        assert r.infer().status_code == 200
        with frozen(mods, "sidecar") as thaw, ThreadPoolExecutor(2) as pool:
            assert [a.status_code for a in pool.map(lambda _: r.infer(), range(2))] == [504] * 2
            state = breaker(r)
            assert state["state"] == "open" and state["ejectedForSeconds"] > 15, state
            ejected = r.infer()
            assert ejected.status_code == 503
            assert "ejected by the circuit breaker" in ejected.json()["error"]
            thawed = thaw()
        # the next poll finds the sidecar Healthy: the ejection ends, the next call probes
        back = first_success(r, within=8.0)
        assert back is not None and back - thawed < 5.0, "still ejected after the module is back"
        assert breaker(r)["state"] == "closed"
        assert any("Healthy envelope ends its ejection" in line for line in r.child.lines)


# -- cascade -----------------------------------------------------------------------------------


def cascade_graph(name: str, mods: Pool, policy: dict[str, Any]) -> Any:
    nodes = [{"name": "main", "type": "cascade",
              "candidates": [{"module": "hung"}, {"module": "backup"}]}]  # fmt: skip
    # no ejection here: each request should meet the hung candidate itself
    policy = {"retries": {"attempts": 0}, "circuitBreaker": {"consecutiveFailures": 1000},
              **policy}  # fmt: skip
    return make_graph(name, [mods.spec("hung"), mods.spec("backup")], nodes, policy=policy)


def test_cascade_escalates_past_a_hung_cheap_candidate(mods: Pool, tmp_path: Path) -> None:
    graph = cascade_graph("esc", mods, {"timeoutMs": 3000, "callTimeoutMs": 600})
    with router(tmp_path, graph, mods.urls) as r, frozen(mods):
        started = time.monotonic()
        response = r.infer()
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.json()  # it used to be a 504 at 600 ms
        assert elapsed < 3.0
        path = explain(response)
        calls = [(e["module"], e["outcome"]) for e in path if e["event"] == "call"]
        assert calls == [("hung", "timeout"), ("backup", "ok")]
        escalate = next(e for e in path if e["event"] == "escalate")
        assert escalate["step"] == "hung" and escalate["timedOut"] is True
        assert escalate["reason"].startswith("timed out: ")
        assert "did not answer within 600 ms" in escalate["reason"]


def test_a_cheap_candidate_gets_only_its_share_of_a_tight_deadline(
    mods: Pool, tmp_path: Path
) -> None:
    graph = cascade_graph("share", mods, {"timeoutMs": 5000, "callTimeoutMs": 4000})
    with router(tmp_path, graph, mods.urls) as r, frozen(mods):
        started = time.monotonic()
        response = r.infer(headers={"x-modulemesh-deadline-ms": "1500"})
        elapsed = time.monotonic() - started
        # the hung candidate's call timeout (4 s) would use all 1.5 s: it gets half, the
        # backup the rest
        assert response.status_code == 200, response.json()
        assert elapsed < 1.5
        path = explain(response)
        hung = next(e for e in path if e["event"] == "call" and e["module"] == "hung")
        assert hung["outcome"] == "timeout" and 600 < hung["ms"] < 1200
        escalate = next(e for e in path if e["event"] == "escalate")
        assert escalate["timedOut"] is True
        assert "no answer within its share of the deadline (750 of the" in escalate["reason"]
        assert [e["module"] for e in path if e["event"] == "call"] == ["hung", "backup"]
