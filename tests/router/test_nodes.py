"""Every node type's semantics over real processes: results are checked against calling the
modules' sidecars directly, and decisions against the explain trace."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import (
    X8,
    X16,
    Pool,
    Router,
    dead_endpoint,
    direct,
    explain,
    make_graph,
    outputs,
    router,
)

SMALL = {"module": "small"}
LARGE = {"module": "large"}


def graph_router(
    pool: Pool, tmp: Path, name: str, nodes: list[dict[str, Any]], modules: list[str],
    *, extra_modules: list[dict[str, Any]] | None = None, endpoints: dict[str, str] | None = None,
    **kw: Any,
) -> Any:  # fmt: skip
    specs = [pool.spec(m) for m in modules] + (extra_modules or [])
    graph = make_graph(name, specs, nodes, **kw)
    return router(tmp, graph, {**pool.urls, **(endpoints or {})})


@pytest.fixture(scope="module")
def nodes_router(pool: Pool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    """One router whose graph holds one node of each kind; the entry is a switch on a header."""
    dead = {"name": "dead", "model": {"path": str(pool.models["small"])}}
    cases = [
        {"when": f"'x-node' in request.headers && request.headers['x-node'] == '{n}'", "node": n}
        for n in ("seq", "mean", "vote", "concat", "keyed", "first", "hard", "soft",
                  "cascade", "stay", "select", "val", "val-last", "val-fb", "val-ok", "canary")
    ]  # fmt: skip
    nodes = [
        {"name": "main", "type": "switch", "cases": cases, "default": {"module": "small"}},
        {"name": "seq", "type": "sequence",
         "steps": [{"module": "embed", "inputs": {"input": "request.features"}},
                   {"module": "small", "inputs": {"input": "embed.embedding"}}],
         "outputs": {"probabilities": "small.probabilities", "embedding": "embed.embedding"}},
        {"name": "mean", "type": "ensemble", "merge": "mean", "steps": [SMALL, LARGE]},
        {"name": "vote", "type": "ensemble", "merge": "vote",
         "steps": [SMALL, LARGE, {"module": "eu", "name": "third"}]},
        {"name": "concat", "type": "ensemble", "merge": "concat", "steps": [SMALL, LARGE]},
        {"name": "keyed", "type": "ensemble", "merge": "keyed", "steps": [SMALL, LARGE]},
        {"name": "first", "type": "ensemble", "merge": "first", "steps": [{"module": "slow"}, LARGE]},
        {"name": "hard", "type": "ensemble", "steps": [{"module": "slow"}, {"module": "dead"}]},
        {"name": "soft", "type": "ensemble", "steps": [SMALL, {"module": "dead", "soft": True}]},
        {"name": "cascade", "type": "cascade", "candidates": [SMALL, LARGE],
         "escalateWhen": "output.confidence == null || output.confidence < 0.8"},
        {"name": "stay", "type": "cascade", "candidates": [SMALL, LARGE],
         "escalateWhen": "output.confidence < 0.01"},
        {"name": "select", "type": "select", "candidates": [SMALL, LARGE],
         "weights": {"latency": 0, "cost": 1, "errorRate": 0}},
        {"name": "val", "type": "validate", "generator": SMALL, "validator": {"module": "check"},
         "acceptWhen": "output.outputs['score'][0] > 0.99", "maxAttempts": 2},
        {"name": "val-last", "type": "validate", "generator": SMALL, "validator": {"module": "check"},
         "acceptWhen": "output.outputs['score'][0] > 0.99", "maxAttempts": 2, "onExhausted": "returnLast"},
        {"name": "val-fb", "type": "validate", "generator": SMALL, "validator": {"module": "check"},
         "acceptWhen": "output.outputs['score'][0] > 0.99", "maxAttempts": 1,
         "onExhausted": "fallback", "fallback": LARGE},
        {"name": "val-ok", "type": "validate", "generator": LARGE, "validator": {"module": "check"},
         "acceptWhen": "output.outputs['score'][0] > 0.5"},
        {"name": "canary", "type": "split", "stickyHeader": "x-user",
         "targets": [{"module": "small", "weight": 50}, {"module": "large", "weight": 50}]},
    ]  # fmt: skip
    modules = [pool.spec(m) for m in ("embed", "small", "eu", "check", "slow")]
    modules.append(pool.spec("large", cost=0.5))
    modules.append(dead)
    graph = make_graph("nodes", modules, nodes, policy={"retries": {"attempts": 0}})
    with router(
        tmp_path_factory.mktemp("nodes"), graph, {**pool.urls, "dead": dead_endpoint()}
    ) as r:
        yield r


def node(r: Router, name: str, inputs: dict[str, Any] | None = None) -> Any:
    return r.infer(inputs, headers={"x-node": name})


def test_sequence_maps_tensors_from_request_and_earlier_steps(
    pool: Pool, nodes_router: Router
) -> None:
    response = node(nodes_router, "seq", {"features": X16})
    got = outputs(response)
    embedding = direct(pool.urls["embed"], "embed", {"input": X16})["embedding"]
    expected = direct(pool.urls["small"], "small", {"input": embedding})["probabilities"]
    np.testing.assert_allclose(got["embedding"], embedding, rtol=1e-5)
    np.testing.assert_allclose(got["probabilities"], expected, rtol=1e-5)
    calls = [e["module"] for e in explain(response) if e["event"] == "call"]
    assert calls == ["embed", "small"]


def test_sequence_missing_request_input_is_a_400_naming_the_step(nodes_router: Router) -> None:
    response = node(nodes_router, "seq", {"wrong": X16})
    assert response.status_code == 400
    error = response.json()["error"]
    assert "node 'seq' step 'embed'" in error and "'features'" in error


def test_ensemble_merges_mean_vote_concat_keyed(pool: Pool, nodes_router: Router) -> None:
    small = direct(pool.urls["small"], "small", {"input": X8})["probabilities"]
    large = direct(pool.urls["large"], "large", {"input": X8})["probabilities"]
    np.testing.assert_allclose(
        outputs(node(nodes_router, "mean"))["probabilities"], (small + large) / 2, rtol=1e-5
    )
    concat = outputs(node(nodes_router, "concat"))["probabilities"]
    assert concat.shape == (1, 6)
    np.testing.assert_allclose(concat, np.concatenate([small, large], axis=-1), rtol=1e-5)
    keyed = outputs(node(nodes_router, "keyed"))
    assert set(keyed) == {"small.probabilities", "large.probabilities"}
    votes = outputs(node(nodes_router, "vote"))["probabilities"]
    winners = [int(np.argmax(a)) for a in (small, large, large)]  # eu is the large model
    expected = np.bincount(winners, minlength=3) / 3.0
    np.testing.assert_allclose(votes[0], expected, rtol=1e-5)


def test_ensemble_first_returns_fastest_and_cancels_the_rest(
    pool: Pool, nodes_router: Router
) -> None:
    started = time.monotonic()
    response = node(nodes_router, "first")
    elapsed = time.monotonic() - started
    large = direct(pool.urls["large"], "large", {"input": X8})["probabilities"]
    np.testing.assert_allclose(outputs(response)["probabilities"], large, rtol=1e-5)
    assert elapsed < 0.45, f"first-merge waited for the slow step ({elapsed:.3f}s)"


def test_ensemble_hard_failure_cancels_siblings_and_names_the_step(nodes_router: Router) -> None:
    started = time.monotonic()
    response = node(nodes_router, "hard")
    elapsed = time.monotonic() - started
    assert response.status_code == 502
    error = response.json()["error"]
    assert "ensemble 'hard': step 'dead' failed (cancelled 1 sibling step(s))" in error
    assert "module 'dead' unreachable" in error
    assert elapsed < 0.45, f"the slow sibling (600 ms) was not cancelled ({elapsed:.3f}s)"


def test_ensemble_soft_step_may_fail(pool: Pool, nodes_router: Router) -> None:
    response = node(nodes_router, "soft")
    small = direct(pool.urls["small"], "small", {"input": X8})["probabilities"]
    np.testing.assert_allclose(outputs(response)["probabilities"], small, rtol=1e-5)
    assert any(e["event"] == "soft-failure" and e["step"] == "dead" for e in explain(response))


def test_switch_cases_and_default(pool: Pool, nodes_router: Router) -> None:
    response = nodes_router.infer()  # no x-node header: default
    small = direct(pool.urls["small"], "small", {"input": X8})["probabilities"]
    np.testing.assert_allclose(outputs(response)["probabilities"], small, rtol=1e-5)
    decision = next(e for e in explain(response) if e["event"] == "decision")
    assert decision["case"] == "default"


def test_switch_without_default_rejects_with_422_naming_it(pool: Pool, tmp_path: Path) -> None:
    nodes = [{"name": "pick", "type": "switch", "onNoMatch": "reject",
              "cases": [{"when": "'x-a' in request.headers", "module": "small"}]}]  # fmt: skip
    with graph_router(pool, tmp_path, "sw", nodes, ["small"], entry="pick") as r:
        response = r.infer()
        assert response.status_code == 422
        assert "switch 'pick': no case matched" in response.json()["error"]
        assert r.infer(headers={"x-a": "1"}).status_code == 200


def test_cascade_escalates_on_low_confidence(pool: Pool, nodes_router: Router) -> None:
    response = node(nodes_router, "cascade")
    large = direct(pool.urls["large"], "large", {"input": X8})["probabilities"]
    np.testing.assert_allclose(outputs(response)["probabilities"], large, rtol=1e-5)
    decisions = [e for e in explain(response) if e["event"] == "decision"]
    first = next(d for d in decisions if d.get("step") == "small")
    assert first["escalate"] is True and first["confidence"] < 0.8
    stay = node(nodes_router, "stay")
    small = direct(pool.urls["small"], "small", {"input": X8})["probabilities"]
    np.testing.assert_allclose(outputs(stay)["probabilities"], small, rtol=1e-5)
    assert [e["module"] for e in explain(stay) if e["event"] == "call"] == ["small"]


def test_cascade_over_a_module_without_confidence_says_how_to_fix_it(
    pool: Pool, tmp_path: Path
) -> None:
    # The default escalateWhen reads output.confidence; an embedder's output is no distribution.
    nodes = [{"name": "main", "type": "cascade",
              "candidates": [{"module": "embed", "inputs": {"input": "request.features"}}, SMALL]}]  # fmt: skip
    with graph_router(pool, tmp_path, "noconf", nodes, ["embed", "small"]) as r:
        response = r.infer({"features": X16, "input": X8})
    assert response.status_code == 502, response.text
    message = response.json()["error"]
    assert "cascade 'main' step 'embed'" in message
    assert "module 'embed' gave no confidence" in message
    assert "confidenceOutput" in message and "output.outputs" in message


def test_select_picks_by_score_and_explains_ranking(nodes_router: Router) -> None:
    response = node(nodes_router, "select")
    decision = next(
        e for e in explain(response) if e["event"] == "decision" and e["node"] == "select"
    )
    assert decision["chosen"] == "large"  # cost 0.5 vs 1.0 with only cost weighted
    assert [c["step"] for c in decision["candidates"]] == ["large", "small"]
    assert [e["module"] for e in explain(response) if e["event"] == "call"] == ["large"]


def test_select_stays_within_budget_and_skips_ejected(pool: Pool, tmp_path: Path) -> None:
    dead = {"name": "dead", "model": {"path": str(pool.models["small"])}, "cost": 0.1}
    nodes = [{"name": "main", "type": "select", "candidates": [{"module": "dead"}, SMALL, LARGE],
              "weights": {"latency": 0, "cost": 1, "errorRate": 0}, "budget": {"maxCost": 0.8}}]  # fmt: skip
    policy = {
        "retries": {"attempts": 0},
        "circuitBreaker": {"consecutiveFailures": 1, "baseEjectionMs": 60000},
    }
    with graph_router(pool, tmp_path, "sel", nodes, ["small"], policy=policy,
                      extra_modules=[pool.spec("large", cost=2.0), dead],
                      endpoints={"dead": dead_endpoint()}) as r:  # fmt: skip
        first = r.infer()
        assert first.status_code == 200  # dead chosen (cheapest), fails, next best answers
        assert [e["module"] for e in explain(first) if e["event"] == "call"] == ["dead", "small"]
        second = r.infer()
        ranking = next(e for e in explain(second) if e["event"] == "decision")["candidates"]
        assert ranking[0]["step"] == "small"  # within budget, dead is ejected, large over budget
        assert ranking[-1]["step"] == "dead" and ranking[-1]["ejected"] is True
        assert next(c for c in ranking if c["step"] == "large")["withinBudget"] is False


def test_validate_rejects_after_max_attempts(nodes_router: Router) -> None:
    response = node(nodes_router, "val")
    assert response.status_code == 422
    assert "validate 'val': output not accepted" in response.json()["error"]
    verdicts = [e for e in explain(response) if e["event"] == "decision" and e["node"] == "val"]
    assert [v["attempt"] for v in verdicts] == [1, 2] and not any(v["accepted"] for v in verdicts)


def test_validate_return_last_fallback_and_accept(pool: Pool, nodes_router: Router) -> None:
    small = direct(pool.urls["small"], "small", {"input": X8})["probabilities"]
    large = direct(pool.urls["large"], "large", {"input": X8})["probabilities"]
    np.testing.assert_allclose(
        outputs(node(nodes_router, "val-last"))["probabilities"], small, rtol=1e-5
    )
    fb = node(nodes_router, "val-fb")
    np.testing.assert_allclose(outputs(fb)["probabilities"], large, rtol=1e-5)
    assert any(e["event"] == "exhausted" and e["action"] == "fallback" for e in explain(fb))
    ok = node(nodes_router, "val-ok")
    np.testing.assert_allclose(outputs(ok)["probabilities"], large, rtol=1e-5)
    verdicts = [e for e in explain(ok) if e["event"] == "decision" and e["node"] == "val-ok"]
    assert [v["accepted"] for v in verdicts] == [True]


def test_split_is_sticky_by_header(nodes_router: Router) -> None:
    arms: dict[str, set[int]] = {}
    for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
        for _ in range(3):
            response = nodes_router.infer(headers={"x-node": "canary", "x-user": user})
            decision = next(
                e for e in explain(response) if e["event"] == "decision" and e["node"] == "canary"
            )
            arms.setdefault(user, set()).add(decision["arm"])
    assert all(len(a) == 1 for a in arms.values()), arms
    assert {next(iter(a)) for a in arms.values()} == {0, 1}, "six users all landed on one arm"


def test_split_weights_and_mirror_discarded(pool: Pool, tmp_path: Path) -> None:
    nodes = [{"name": "main", "type": "split",
              "targets": [{"module": "small", "weight": 100}, {"module": "large", "weight": 0}],
              "mirror": {"module": "check", "percent": 100}}]  # fmt: skip
    # the mirror (validator) takes the same 8-wide input? no: it takes 3-wide probabilities,
    # so mirrored calls fail at the module; the answer must not be affected.
    before = pool.envelope("check")["requests"]
    with graph_router(pool, tmp_path, "split", nodes, ["small", "large", "check"]) as r:
        small = direct(pool.urls["small"], "small", {"input": X8})["probabilities"]
        for _ in range(5):
            response = r.infer()
            np.testing.assert_allclose(outputs(response)["probabilities"], small, rtol=1e-5)
            assert any(e["event"] == "mirror" for e in explain(response))
        deadline = time.monotonic() + 5
        while pool.envelope("check")["requests"] < before + 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pool.envelope("check")["requests"] >= before + 5
