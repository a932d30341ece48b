"""Envelope-driven health with real processes: a select budget bounds the percentile it names
(a module frozen with SIGSTOP most of the time is fast at p50 but not at p99, and a p99 budget
moves the traffic off it); a module's latency objective turns its envelope Degraded with a
reason naming the percentile and the numbers; that reason reaches the router in the compact
header (``GET /envelopes``, explain); and Degraded triggers the declared fallback when the
graph's ``policy.fallbackOn`` lists it, while by default only Unhealthy does."""

from __future__ import annotations

import collections
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modulemesh import zoo

from .conftest import X8, Pool, explain, make_graph, router, start_pool

OBJECTIVE_MS = 100.0

MODELS: dict[str, tuple[Any, dict[str, Any]]] = {
    "frozen": (lambda: zoo.classifier(features=8, classes=3, seed=1), {}),
    "steady": (lambda: zoo.classifier(features=8, classes=3, seed=2), {}),
    # made slow by freezing their runtimes (SIGSTOP) while they serve
    **{
        name: (
            lambda: zoo.classifier(features=8, classes=3, seed=3),
            {"health": {"degradedP95Ms": OBJECTIVE_MS}},
        )
        for name in ("laggard", "lagging")
    },
    "backup": (lambda: zoo.classifier(features=8, classes=3, seed=4), {}),
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """Modules of these tests alone (started by the local mesh, which passes the latency
    objective to the sidecar), so every envelope starts fresh."""
    p = start_pool(tmp_path_factory.mktemp("health"), MODELS)
    yield p
    p.mesh.stop()


def infer_direct(pool: Pool, module: str, n: int = 1) -> None:
    """``n`` requests straight to a module's sidecar."""
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8],
                        "data": X8.ravel().tolist()}]}  # fmt: skip
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            response = client.post(f"{pool.urls[module]}/v2/models/{module}/infer", json=body)
            assert response.status_code == 200, response.text


def wait_envelope(pool: Pool, module: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
    """The module's sidecar envelope once it is in ``state`` (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        envelope = pool.envelope(module)
        if envelope["state"] == state:
            return envelope
        assert time.monotonic() < deadline, f"{module} never {state}: {envelope}"
        time.sleep(0.2)


# --- select budgets name their percentile ------------------------------------------------


class Freezer:
    """SIGSTOP a process for ``frozen`` of every ``period`` seconds, in a thread, until
    stopped; the process is always left running (SIGCONT) at the end. Entering returns once
    the first freeze has begun, so a request sent then waits it out."""

    def __init__(self, stop_process: Any, frozen: float = 0.6, period: float = 0.7) -> None:
        self._signal = stop_process
        self._frozen, self._period = frozen, period
        self._done = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._run, name="freezer", daemon=True)

    def _run(self) -> None:
        try:
            while not self._done.is_set():
                self._signal(signal.SIGSTOP)
                self._first.set()
                self._done.wait(self._frozen)
                self._signal(signal.SIGCONT)
                self._done.wait(self._period - self._frozen)
        finally:
            self._signal(signal.SIGCONT)

    def __enter__(self) -> Freezer:
        self._thread.start()
        assert self._first.wait(5), "the freezer did not start"
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(5)


def test_a_p99_budget_moves_traffic_off_a_module_that_stalls(mesh: Pool, tmp_path: Path) -> None:
    budget_ms = 150.0
    nodes = [{"name": "main", "type": "select",
              "candidates": [{"module": "frozen"}, {"module": "steady"}],
              # cost alone decides within the budget: frozen (cost 1) wins while it is in it
              "weights": {"latency": 0, "cost": 1, "errorRate": 0},
              "budget": {"maxLatencyMs": budget_ms, "latencyPercentile": "p99"}}]  # fmt: skip
    modules = [mesh.spec("frozen", cost=1), mesh.spec("steady", cost=5)]
    graph = make_graph("budget", modules, nodes)
    infer_direct(mesh, "frozen", 40)  # a window of fast requests: its p50 stays fast
    chosen: collections.Counter[str] = collections.Counter()
    with router(tmp_path, graph, mesh.urls) as r:
        assert r.infer().status_code == 200
        with Freezer(mesh.mesh.modules["frozen"].runtime.signal):
            started = time.monotonic()
            last: dict[str, Any] = {}
            while time.monotonic() - started < 6.0:
                response = r.infer()
                assert response.status_code == 200, response.text
                decision = next(e for e in explain(response) if e["event"] == "decision")
                if time.monotonic() - started > 3.0:  # after the router learnt the stalls
                    chosen[decision["chosen"]] += 1
                    last = decision
    assert chosen["steady"] >= 0.9 * sum(chosen.values()), chosen
    ranking = {c["step"]: c for c in last["candidates"]}
    frozen = ranking["frozen"]
    # out of the budget by its p99 although its p50 is well within it
    assert frozen["withinBudget"] is False and frozen["p99Ms"] > budget_ms
    assert frozen["latencyMs"] < budget_ms
    assert ranking["steady"]["withinBudget"] is True
    envelope = mesh.envelope("frozen")
    assert envelope["latency"]["p50"] * 1000 < budget_ms < envelope["latency"]["p99"] * 1000


def test_a_p50_budget_keeps_the_module_that_is_fast_on_most_requests(
    mesh: Pool, tmp_path: Path
) -> None:
    # Figures like those above against a budget on p50 (as every budget was before it named
    # its percentile): frozen is within it and, cheaper, keeps the traffic.
    infer_direct(mesh, "frozen", 40)
    with Freezer(mesh.mesh.modules["frozen"].runtime.signal):
        infer_direct(mesh, "frozen", 3)  # one of them waits out a freeze
    nodes = [{"name": "main", "type": "select",
              "candidates": [{"module": "frozen"}, {"module": "steady"}],
              "weights": {"latency": 0, "cost": 1, "errorRate": 0},
              "budget": {"maxLatencyMs": 150, "latencyPercentile": "p50"}}]  # fmt: skip
    modules = [mesh.spec("frozen", cost=1), mesh.spec("steady", cost=5)]
    with router(tmp_path, make_graph("budget50", modules, nodes), mesh.urls) as r:
        for _ in range(5):
            decision = next(e for e in explain(r.infer()) if e["event"] == "decision")
            assert decision["chosen"] == "frozen"
        frozen = next(c for c in decision["candidates"] if c["step"] == "frozen")
        assert frozen["p50Ms"] < 150 and frozen["withinBudget"] is True
    assert mesh.envelope("frozen")["latency"]["p99"] * 1000 > 150  # yet its tail is slow


# --- latency objectives, Degraded, and its reason in the header ---------------------------


def degrade(pool: Pool, module: str) -> dict[str, Any]:
    """Make ``module`` break its p95 objective for real and return its Degraded envelope: six
    requests while its runtime is frozen 300 ms of every 350, so at least one waits out a
    freeze, and of six requests the p95 is the slowest."""
    with Freezer(pool.mesh.modules[module].runtime.signal, frozen=0.3, period=0.35):
        infer_direct(pool, module, 6)
    return wait_envelope(pool, module, "Degraded")


def test_a_broken_latency_objective_turns_the_envelope_degraded_with_a_reason(
    mesh: Pool,
) -> None:
    envelope = degrade(mesh, "laggard")
    p95_ms = envelope["latency"]["p95"] * 1000
    assert p95_ms > 2 * OBJECTIVE_MS
    assert envelope["reason"].startswith(f"p95 latency {p95_ms:.1f} ms > objective 100.0 ms")
    # the compact header of every answer carries the state and the reason too
    response = httpx.get(f"{mesh.urls['laggard']}/v2/models/laggard", timeout=5)
    header = response.headers["x-modulemesh-envelope"]
    assert ";s=Degraded;" in header and ";why=p95 latency " in header


def test_by_default_a_degraded_module_keeps_its_calls_and_the_router_knows_why(
    mesh: Pool, tmp_path: Path
) -> None:
    degrade(mesh, "laggard")
    modules = [mesh.spec("laggard", fallback="backup"), mesh.spec("backup")]
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "laggard"}]}]
    graph = make_graph("keep", modules, nodes)
    with router(tmp_path, graph, mesh.urls, poll_interval=60) as r:
        for _ in range(2):
            response = r.infer()
            assert response.status_code == 200
            path = explain(response)
            assert not [e for e in path if e["event"] == "fallback"]
            assert [e["module"] for e in path if e["event"] == "call"] == ["laggard"]
        # learnt from the answer's header (not a poll), reason included
        entry = r.envelopes()["modules"]["laggard"]
        assert entry["source"] == "header"
        assert entry["envelope"]["state"] == "Degraded"
        assert entry["envelope"]["reason"].startswith("p95 latency ")


def test_degraded_triggers_the_declared_fallback_when_fallback_on_lists_it(
    mesh: Pool, tmp_path: Path
) -> None:
    # lagging has had no traffic: the router's first poll finds it Healthy, so what it learns
    # about the module's latency comes from the answers' headers alone.
    modules = [mesh.spec("lagging", fallback="backup"), mesh.spec("backup")]
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "lagging"}]}]
    policy = {"fallbackOn": ["Unhealthy", "Degraded"]}
    graph = make_graph("degr", modules, nodes, policy=policy)
    with router(tmp_path, graph, mesh.urls, poll_interval=60) as r:
        fallback: dict[str, Any] | None = None
        started = time.monotonic()
        with Freezer(mesh.mesh.modules["lagging"].runtime.signal, frozen=0.3, period=0.35):
            while fallback is None and time.monotonic() - started < 10:
                response = r.infer()
                assert response.status_code == 200, response.text
                path = explain(response)
                fallback = next((e for e in path if e["event"] == "fallback"), None)
        assert fallback is not None, "Degraded never triggered the fallback"
        # passed over before being called: the only call is the fallback's
        assert [e["module"] for e in path if e["event"] == "call"] == ["backup"]
        assert fallback["module"] == "lagging" and fallback["to"] == "backup"
        reason = fallback["reason"]
        assert "module 'lagging' is Degraded by its envelope (p95 latency " in reason
        assert "> objective 100.0 ms" in reason and "no reason given" not in reason
        assert r.envelopes()["modules"]["lagging"]["source"] == "header"
