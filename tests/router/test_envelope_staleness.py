"""Stale envelopes count as Unknown: never as the Healthy (or Unhealthy) they last said.

The rule (:mod:`modulemesh.router.envelopes`): an envelope older than the staleness bound, by
its own timestamp, is reported and acted on as ``Unknown`` with a reason saying it is stale.
The bound is the graph's ``spec.policy.envelopeStaleAfterSeconds`` (30 s by default), or a
``select`` node's own ``staleAfterSeconds`` for its ranking. Unit tests (no processes) pin the
rule on ``ModuleEnvelope`` / ``EnvelopeStore``, on health-aware fallback under the graph's bound
and on the ranking of a ``select`` node. The real-process test runs a module whose sidecar can be made to
stamp its envelopes two minutes in the past (SIGUSR1; SIGUSR2 stops it), as a sidecar whose
clock fell behind would: every envelope it publishes, polled or in response headers, is by its
own timestamp 120 s old, while its figures stay current (Healthy, ~1 ms) and the module keeps
answering. The router then reports it ``Unknown`` ("stale: ...") at ``GET /envelopes`` and its
``select`` node stops preferring it (the explain trace shows the ranking); once its envelopes
are fresh again the module is preferred again.

Stopping the module would not make its envelope stale: the router's next poll fails and the
module is ``Unknown`` with that error as the reason (also checked below, as a unit).
"""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from modulemesh import oip, zoo
from modulemesh.api.graph import Priority, SelectNode
from modulemesh.api.resolved import resolve
from modulemesh.envelope import HealthEnvelope, Latency, State
from modulemesh.localmesh.plan import free_port, plan_mesh
from modulemesh.localmesh.supervisor import Mesh
from modulemesh.router.context import RequestContext
from modulemesh.router.envelopes import EnvelopeStore, ModuleEnvelope
from modulemesh.router.executor import Executor
from modulemesh.router.nodes import select
from modulemesh.router.payload import ClientInputs

from .conftest import X8, Pool, direct, explain, make_graph, module_spec, router

# -- the rule, without processes -------------------------------------------------------------


def envelope(
    module: str = "m",
    state: State = State.HEALTHY,
    *,
    age: float = 0.0,
    p50: float | None = 0.002,
    error_rate: float | None = 0.0,
) -> HealthEnvelope:
    """An envelope made ``age`` seconds ago (by its own timestamp)."""
    return HealthEnvelope(
        module=module,
        state=state,
        reason="as the sidecar said",
        latency=Latency(p50=p50, p95=p50, p99=p50),
        error_rate=error_rate,
        requests=10,
        timestamp=round(time.time() - age, 3),
    )


STALE = re.compile(r"^stale: last envelope is (\d+\.\d)s old$")


def stale_age(reason: str) -> float:
    """The age a stale reason states; fails if the reason does not say stale."""
    match = STALE.match(reason)
    assert match, f"reason does not say stale: {reason!r}"
    return float(match.group(1))


@pytest.mark.parametrize("state", [State.HEALTHY, State.DEGRADED, State.UNHEALTHY])
def test_polled_envelope_older_than_bound_is_unknown_and_says_stale(state: State) -> None:
    entry = ModuleEnvelope("m")
    entry.set_envelope(envelope(state=state, age=45.0))
    current = entry.current(30.0)
    assert current.state is State.UNKNOWN
    assert 44.9 <= stale_age(current.reason) <= 46.0
    assert current.module == "m"
    fresh = ModuleEnvelope("m")
    fresh.set_envelope(envelope(state=state, age=1.0))
    assert fresh.current(30.0).state is state
    assert fresh.current(30.0).reason == "as the sidecar said"


def test_header_envelope_is_judged_by_its_own_timestamp_not_its_arrival() -> None:
    entry = ModuleEnvelope("m")
    entry.set_header(envelope(age=45.0).to_header().encode())  # arrives now, made 45 s ago
    assert entry.source == "header"
    current = entry.current(30.0)
    assert current.state is State.UNKNOWN and stale_age(current.reason) >= 44.9
    entry.set_header(envelope(age=0.5).to_header().encode())
    assert entry.current(30.0).state is State.HEALTHY
    # a header without a timestamp cannot be shown to be fresh: it counts as stale
    entry.set_header(b"v=1;m=m;s=Healthy;p50=2;e=0")
    assert entry.current(30.0).state is State.UNKNOWN
    assert entry.current(30.0).reason.startswith("stale: ")


def test_bound_is_per_reader_store_default_or_select_node() -> None:
    store = EnvelopeStore(["m"], stale_after=30.0)
    store["m"].set_envelope(envelope(age=10.0))
    assert store.state("m").state is State.HEALTHY
    assert store.state("m", 5.0).state is State.UNKNOWN
    assert store.state("m", 60.0).state is State.HEALTHY


def test_snapshot_reports_stale_module_unknown_and_fresh_one_as_is() -> None:
    store = EnvelopeStore(["old", "new", "never"])
    store["old"].set_envelope(envelope("old", age=31.0))
    store["new"].set_envelope(envelope("new", age=0.1))
    snap = store.snapshot()
    old = snap["old"]
    assert old["envelope"]["state"] == "Unknown"
    assert stale_age(old["envelope"]["reason"]) >= 30.9
    assert old["error"] is None and old["source"] == "poll"
    assert snap["new"]["envelope"]["state"] == "Healthy"
    assert snap["never"]["envelope"]["state"] == "Unknown"
    assert snap["never"]["envelope"]["reason"] == "no envelope received yet"


async def test_failed_poll_is_unknown_with_the_error_not_stale() -> None:
    store = EnvelopeStore(["m"])
    store["m"].set_envelope(envelope(age=0.1))

    async def refused(module: str) -> tuple[int, bytes]:
        raise ConnectionRefusedError(f"{module}: connection refused")

    await store.poll_once(refused, interval=0.0)
    current = store.state("m")
    assert current.state is State.UNKNOWN
    assert current.reason == "envelope poll failed: m: connection refused"


def select_executor(stale_after: float = 30.0) -> Executor:
    """An executor (never started: no connection is made) with select ``main`` over a, b."""
    modules = [
        module_spec("a", Path("/unused/a.onnx"), cost=1.0),
        module_spec("b", Path("/unused/b.onnx"), cost=0.5),
    ]
    nodes = [{"name": "main", "type": "select", "candidates": [{"module": "a"}, {"module": "b"}],
              "weights": {"latency": 1, "cost": 1, "errorRate": 0},
              "staleAfterSeconds": stale_after}]  # fmt: skip
    graph = make_graph("units", modules, nodes)
    return Executor(resolve(graph, [], {"a": "http://127.0.0.1:9", "b": "http://127.0.0.1:9"}))


def test_select_ranks_a_stale_candidate_as_unknown_not_as_its_last_figures() -> None:
    ex = select_executor(stale_after=10.0)
    node = ex.nodes["main"]
    assert isinstance(node, SelectNode)
    ex.envelopes["b"].set_envelope(envelope("b", p50=0.250, age=0.1))
    # fresh: a is fast (2 ms + cost 1.0) and beats b (250 ms + cost 0.5)
    ex.envelopes["a"].set_envelope(envelope("a", p50=0.002, age=0.1))
    ranked = select.rank(ex, node)
    assert [c.step.step_name for c in ranked] == ["a", "b"]
    assert ranked[0].latency_ms == pytest.approx(2.0)
    # the same figures, 11 s old for a select whose bound is 10 s: a's figures are unknown,
    # scored as the worst known (b's 250 ms), so b wins on cost
    ex.envelopes["a"].set_envelope(envelope("a", p50=0.002, age=11.0))
    ranked = select.rank(ex, node)
    assert [c.step.step_name for c in ranked] == ["b", "a"]
    a = ranked[1].explain()
    assert a["latencyMs"] is None and a["errorRate"] is None
    assert a["score"] == pytest.approx(250.0 + 1.0)
    # the store's own bound (30 s) would still call it fresh: the node's bound is what counts
    assert ex.envelopes.state("a").state is State.HEALTHY


def fallback_executor(policy: dict[str, Any]) -> Executor:
    """An executor (never started: no connection is made) whose module a falls back to b."""
    modules = [
        module_spec("a", Path("/unused/a.onnx"), fallback="b"),
        module_spec("b", Path("/unused/b.onnx")),
    ]
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "a"}]}]
    graph = make_graph("units", modules, nodes, policy=policy)
    return Executor(resolve(graph, [], {"a": "http://127.0.0.1:9", "b": "http://127.0.0.1:9"}))


def untagged_request() -> RequestContext:
    body, _ = oip.encode_request({"input": np.zeros((1, 8), np.float32)})
    return RequestContext(
        inputs=ClientInputs.parse(body, None), headers={}, tags=frozenset(),
        priority=Priority.STANDARD, parameters={}, timeout_ms=1000.0, explain=False,
        trace_headers=[],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "acted_on"),
    [
        ({}, False),
        ({"envelopeStaleAfterSeconds": 120}, True),
        ({"envelopeStaleAfterSeconds": 45}, False),
    ],
    ids=["default-30s", "bound-120s", "bound-45s"],
)
def test_graph_policy_sets_how_long_an_envelope_counts(
    policy: dict[str, Any], acted_on: bool
) -> None:
    ex = fallback_executor(policy)
    ex.envelopes["a"].set_envelope(envelope("a", State.UNHEALTHY, age=60.0))
    expected = State.UNHEALTHY if acted_on else State.UNKNOWN
    assert ex.envelopes.state("a").state is expected
    assert ex.envelopes.snapshot()["a"]["envelope"]["state"] == expected.value
    refusal = ex._refusal("a", untagged_request(), "node 'main'")
    if acted_on:  # health-aware fallback: a is not called, b answers instead
        assert refusal is not None and refusal.fallback and refusal.status == 503
        assert "Unhealthy by its envelope" in refusal.message
    else:  # a 60 s old Unhealthy is old news: a is called
        assert refusal is None


@pytest.mark.parametrize("bound", [0, 4.9, 3601])
def test_envelope_bound_is_checked_when_the_graph_is_read(bound: float) -> None:
    # below 5 s an idle module (polled every 2 s) would flicker between Unknown and its state
    with pytest.raises(ValidationError) as error:
        make_graph("units", [module_spec("a", Path("/a.onnx"))],
                   [{"name": "main", "type": "sequence", "steps": [{"module": "a"}]}],
                   policy={"envelopeStaleAfterSeconds": bound})  # fmt: skip
    assert "envelopeStaleAfterSeconds" in str(error.value)


# -- a real module whose envelopes go stale ----------------------------------------------------

LAGGING_SIDECAR = """\
import runpy, signal, sys
import modulemesh.sidecar.health as health
_envelope, _lag = health.HealthEnvelope, [0.0]
def _stamped(**fields):
    fields["timestamp"] = round(fields["timestamp"] - _lag[0], 3)
    return _envelope(**fields)
health.HealthEnvelope = _stamped
def _set_lag(seconds):
    def handler(signum, frame):
        _lag[0] = seconds
    return handler
signal.signal(signal.SIGUSR1, _set_lag(120.0))
signal.signal(signal.SIGUSR2, _set_lag(0.0))
sys.argv = ["modulemesh", *sys.argv[1:]]
runpy.run_module("modulemesh", run_name="__main__", alter_sys=True)
"""
"""``python -c LAGGING_SIDECAR sidecar ...``: ``modulemesh sidecar`` that, after SIGUSR1, stamps
every envelope it makes 120 s in the past (as if its clock had fallen behind; the figures stay
current) and, after SIGUSR2, stamps them right again."""

LAG = 120.0

MODULES: dict[str, tuple[Any, dict[str, Any]]] = {
    # fast; its sidecar can be made to stamp its envelopes 120 s in the past
    "lagging": (lambda: zoo.classifier(features=8, classes=3, temperature=0.1, seed=3), {}),
    # slow (250 ms batching delay), always fresh
    "steady": (
        lambda: zoo.classifier(features=8, classes=3, temperature=0.1, seed=4),
        {"batching": {"maxBatchSize": 64, "maxDelayMs": 250, "adaptive": False}},
    ),
}


@pytest.fixture
def modules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """``lagging`` (sidecar run by LAGGING_SIDECAR) and ``steady``, each runtime + sidecar."""
    tmp = tmp_path_factory.mktemp("stale")
    paths = {name: zoo.save(build(), tmp / f"{name}.onnx") for name, (build, _) in MODULES.items()}
    specs = [module_spec(name, paths[name], **extra) for name, (_, extra) in MODULES.items()]
    graph = make_graph("stale-pool", specs, [
        {"name": "main", "type": "sequence", "steps": [{"module": "lagging"}]},
    ])  # fmt: skip
    plan = plan_mesh(graph, [], tmp, router_port=free_port())
    planned = []
    for m in plan.modules:
        if m.name == "lagging":
            assert m.sidecar_args[1:4] == ["-m", "modulemesh", "sidecar"], m.sidecar_args
            m = replace(
                m, sidecar_args=[sys.executable, "-c", LAGGING_SIDECAR, *m.sidecar_args[3:]]
            )
        planned.append(m)
    mesh = Mesh(replace(plan, modules=planned), log_dir=tmp / "logs")
    try:
        for m in planned:
            mesh.start_module(m.name)
        deadline = time.monotonic() + 60
        for m in planned:
            mesh.wait_module(m.name, deadline)
        yield Pool(mesh, paths, {m.name: m.url for m in planned})
    finally:
        mesh.stop()


def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call ``check`` until it returns something truthy (then return it) or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)


def decision(response: httpx.Response) -> dict[str, Any]:
    """The select node's decision in the explain trace."""
    assert response.status_code == 200, response.text
    found: dict[str, Any] = next(
        e for e in explain(response) if e["event"] == "decision" and e["node"] == "main"
    )
    return found


def test_stale_envelope_is_unknown_at_envelopes_and_select_prefers_the_fresh_module(
    modules: Pool, tmp_path: Path
) -> None:
    lagging_url = modules.urls["lagging"]
    sidecar = modules.mesh.modules["lagging"].sidecar
    # both modules need latencies in their sidecars' windows for select to weigh
    for _ in range(3):
        direct(lagging_url, "lagging", {"input": X8})
    direct(modules.urls["steady"], "steady", {"input": X8})
    nodes = [{"name": "main", "type": "select",
              "candidates": [{"module": "lagging"}, {"module": "steady"}],
              "weights": {"latency": 1, "cost": 1, "errorRate": 0}}]  # fmt: skip
    # fresh: lagging ~1 ms + cost 1.0 beats steady ~250 ms + cost 0.5; with lagging's figures
    # unknown they score as steady's 250 ms, and steady wins on cost
    specs = [modules.spec("lagging", cost=1.0), modules.spec("steady", cost=0.5)]
    graph = make_graph("stale", specs, nodes, policy={"retries": {"attempts": 0}})
    with router(tmp_path, graph, modules.urls, poll_interval=0.5) as r:

        def both_known() -> bool:
            envs = r.envelopes()["modules"]
            return all(
                envs[m]["envelope"]["state"] == "Healthy"
                and envs[m]["envelope"]["latency"]["p50"] is not None
                for m in ("lagging", "steady")
            )

        eventually(both_known, 10, "both envelopes with latencies")
        fresh = decision(r.infer())
        assert fresh["chosen"] == "lagging", fresh
        assert fresh["candidates"][0]["latencyMs"] is not None

        sidecar.signal(signal.SIGUSR1)  # from now on its envelopes are stamped 120 s ago

        def steady_chosen() -> tuple[httpx.Response, dict[str, Any]] | None:
            response = r.infer()
            d = decision(response)
            return (response, d) if d["chosen"] == "steady" else None

        response, stale = eventually(steady_chosen, 10, "select to pass over the stale module")
        ranking = {c["step"]: c for c in stale["candidates"]}
        assert [c["step"] for c in stale["candidates"]] == ["steady", "lagging"]
        assert ranking["lagging"]["latencyMs"] is None and ranking["lagging"]["errorRate"] is None
        assert ranking["steady"]["latencyMs"] > 100  # steady's own, fresh figure
        assert ranking["lagging"]["score"] > ranking["steady"]["score"]
        calls = [e["module"] for e in explain(response) if e["event"] == "call"]
        assert calls == ["steady"]

        envs = r.envelopes()["modules"]
        lagging = envs["lagging"]
        assert lagging["envelope"]["state"] == "Unknown", lagging
        assert LAG - 5 <= stale_age(lagging["envelope"]["reason"]) <= LAG + 30
        assert lagging["error"] is None  # it answers: old news, not a failure
        assert envs["steady"]["envelope"]["state"] == "Healthy"
        # read directly, its sidecar still says Healthy and fast, only 120 s ago
        own = modules.envelope("lagging")
        assert own["state"] == "Healthy" and own["latency"]["p50"] is not None
        assert time.time() - own["timestamp"] > LAG - 5

        # it stays passed over: quiet now, it is polled, and every poll succeeds with old news
        def polled() -> dict[str, Any] | None:
            entry: dict[str, Any] = r.envelopes()["modules"]["lagging"]
            return entry if entry["source"] == "poll" else None

        entry = eventually(polled, 5, "the quiet module to be polled")
        assert entry["error"] is None and entry["envelope"]["state"] == "Unknown"
        assert entry["envelope"]["reason"].startswith("stale: ")
        again = decision(r.infer())
        assert again["chosen"] == "steady"
        assert next(c for c in again["candidates"] if c["step"] == "lagging")["latencyMs"] is None

        sidecar.signal(signal.SIGUSR2)  # stamped right again

        def lagging_chosen() -> bool:
            return bool(decision(r.infer())["chosen"] == "lagging")

        eventually(lagging_chosen, 10, "the module, fresh again, to be preferred again")
        assert r.envelopes()["modules"]["lagging"]["envelope"]["state"] == "Healthy"
