"""A module's rollout in the graph's status (issue 16, point 3): what a router's rollout reports
in its /envelopes answer (built here by the router's own ModuleRollout, walked on a fake clock)
reaches status.modules[].rollout through parse_envelopes and compute_status, a malformed one is
left out, the `kubectl get mg` column (status.rollout) says it in a few words, `modulemesh status NAME` prints versions, phase, step, share, reason and figures, and
the end of a rollout between two statuses is one RolledBack (Warning) or Promoted Event."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import numpy as np

from modulemesh.api import ModuleGraph
from modulemesh.operator.observe import Observation, compute_status, parse_envelopes
from modulemesh.operator.rollout_events import rollout_events
from modulemesh.operator.rollout_status import rollout_column
from modulemesh.operator.status_command import detail
from modulemesh.rollout.controller import Route
from modulemesh.rollout.traffic import ModuleRollout

NOW = datetime(2026, 12, 7, 0, 0, 0, tzinfo=UTC)

GRAPH = ModuleGraph.model_validate({
    "apiVersion": "modulemesh.io/v1alpha1", "kind": "ModuleGraph",
    "metadata": {"name": "g", "namespace": "ns"},
    "spec": {
        "modules": [{
            "name": "clf", "model": {"path": "v1.onnx"}, "version": "1",
            "canary": {"model": {"path": "v2.onnx"}, "version": "2"},
            "rollout": {"steps": [{"percent": 10, "holdRequests": 30},
                                  {"percent": 100, "holdRequests": 30}],
                        "tolerances": {"minSamples": 30}},
        }],
        "routing": {"entry": "main", "nodes": [
            {"name": "main", "type": "sequence", "steps": [{"module": "clf"}]}]},
    },
})  # fmt: skip


def _rolled_back() -> dict[str, Any]:
    """The router's summary of a rollout whose canary failed a tenth of its calls."""
    module = GRAPH.spec.modules[0]
    rollout = ModuleRollout(module, "http://127.0.0.1:9", lambda _: None)
    rng = np.random.default_rng(1)
    for conf in rng.beta(8, 2, 60):
        rollout.controller.record(Route.STABLE, 2.0, True, float(conf))
    for i, conf in enumerate(rng.beta(8, 2, 40)):
        rollout.controller.record(Route.CANARY, 2.0, i % 10 != 0, float(conf))
    done = rollout.controller.evaluate()
    assert done is not None and done.kind == "RolledBack"
    return rollout.summary()


def _payload(rollout: Any) -> dict[str, Any]:
    envelope = {"state": "Healthy", "requestRate": 5.0, "timestamp": NOW.timestamp()}
    return {"modules": {"clf": {"envelope": envelope, "rollout": rollout}}}


def _status(payload: dict[str, Any]) -> dict[str, Any]:
    fields, _ = compute_status(
        Observation(graph=GRAPH, now=NOW, envelopes=parse_envelopes(payload))
    )
    return fields


def test_the_routers_rollout_reaches_the_status() -> None:
    status = _status(_payload(_rolled_back()))
    rollout = status["modules"][0]["rollout"]
    assert {k: rollout[k] for k in ("phase", "step", "steps", "stepPercent", "canaryShare")} == {
        "phase": "RolledBack", "step": 1, "steps": 2, "stepPercent": 10, "canaryShare": 0,
    }  # fmt: skip
    assert (rollout["stableVersion"], rollout["canaryVersion"]) == ("1", "2")
    assert rollout["reason"].startswith("step 1 of 2 (10%): error rate 0.1 is above its limit")
    error = next(f for f in rollout["figures"] if f["name"] == "errorRate")
    assert error == {"name": "errorRate", "stable": 0.0, "canary": 0.1, "limit": 0.01,
                     "passed": False}  # fmt: skip


def test_a_module_without_a_rollout_or_with_a_malformed_one_shows_none() -> None:
    assert "rollout" not in _status(_payload(None))["modules"][0]
    assert "rollout" not in _status(_payload({"phase": "Sideways", "step": 1}))["modules"][0]


def test_the_kubectl_column_says_each_rollout_in_a_few_words() -> None:
    rolled = _status(_payload(_rolled_back()))["modules"]
    assert rollout_column(rolled) == "clf: RolledBack 1/2"
    fresh = ModuleRollout(GRAPH.spec.modules[0], "http://127.0.0.1:9", lambda _: None)
    going = _status(_payload(fresh.summary()))["modules"]
    assert rollout_column(going) == "clf: Progressing 1/2 (10%)"
    other = {**going[0], "name": "emb"}
    assert (
        rollout_column([*going, other]) == "clf: Progressing 1/2 (10%); emb: Progressing 1/2 (10%)"
    )
    assert rollout_column(_status(_payload(None))["modules"]) is None


def test_modulemesh_status_prints_the_comparison() -> None:
    status = _status(_payload(_rolled_back()))
    out = io.StringIO()
    detail({"metadata": {"namespace": "ns", "name": "g"}, "status": status}, out)
    text = out.getvalue()
    rollouts = text.split("\nRollouts:\n", 1)[1].splitlines()
    assert rollouts[0] == "  clf: version 1 -> 2, RolledBack at step 1/2 (10%), canary serves 0%"
    assert rollouts[1].startswith("  step 1 of 2 (10%): error rate 0.1 is above its limit 0.01")
    assert rollouts[2].split() == ["FIGURE", "STABLE", "CANARY", "LIMIT", "OK"]
    assert rollouts[3].split() == ["errorRate", "0.0000", "0.1000", "0.0100", "NO"]
    assert any(line.split()[:1] == ["p99LatencyMs"] and line.split()[-1] == "yes"
               for line in rollouts)  # fmt: skip


def test_a_rollback_is_one_warning_event_with_the_numbers() -> None:
    progressing = {**_rolled_back(), "phase": "Progressing", "reason": ""}
    before = _status(_payload(progressing))
    after = _status(_payload(_rolled_back()))
    (event,) = rollout_events(before, after)
    assert (event.type, event.reason) == ("Warning", "RolledBack")
    assert event.message.startswith("module clf: version 1 -> 2 RolledBack at step 1/2: step 1")
    assert event.message.endswith("; failing: errorRate 0.1 (limit 0.01)")
    assert rollout_events(after, after) == []  # once per end
    assert rollout_events(before, before) == []  # still walking: no news


def test_a_promotion_is_a_normal_event_also_when_first_seen() -> None:
    promoted = {**_rolled_back(), "phase": "Promoted", "reason": "step 2 of 2 (100%) passed"}
    promoted["figures"] = [f | {"passed": True} for f in promoted["figures"]]
    (event,) = rollout_events(None, _status(_payload(promoted)))
    assert (event.type, event.reason) == ("Normal", "Promoted")
    assert "failing" not in event.message
