"""A graph's revision history (issue 16, point 3): each new generation of the spec is a new
revision in status.revisions with its outcome (Ready, Failed, or a rollout of its canary
Promoted / RolledBack), an outcome reached stays, only the last ten are kept, the status model
(and so the CRD's schema) accepts the history, `modulemesh status NAME` lists it, and
`modulemesh rollback` picks the previous revision or the one named, refusing one that is not
kept with a message that names the kept ones."""

from __future__ import annotations

import io
from typing import Any

import pytest

from modulemesh.api.status import ModuleGraphStatus
from modulemesh.operator.revisions import (
    REVISION_LIMIT,
    RevisionError,
    outcome,
    pick,
    revision_history,
)
from modulemesh.operator.status_command import detail


def _spec(version: str, canary: str | None = None) -> dict[str, Any]:
    module: dict[str, Any] = {"name": "clf", "model": {"path": "v.onnx"}, "version": version}
    if canary is not None:
        module["canary"] = {"model": {"path": "c.onnx"}, "version": canary}
    return {
        "modules": [module],
        "routing": {"entry": "main", "nodes": [
            {"name": "main", "type": "sequence", "steps": [{"module": "clf"}]}]},
    }  # fmt: skip


def _status(ready: str = "Unknown", validated: str = "True", **rollout: str) -> dict[str, Any]:
    conditions = [
        {"type": "Ready", "status": ready, "reason": "R", "lastTransitionTime": "t"},
        {"type": "Validated", "status": validated, "reason": "R", "lastTransitionTime": "t"},
    ]
    module: dict[str, Any] = {"name": "clf"}
    if rollout:
        module["rollout"] = rollout
    return {"conditions": conditions, "modules": [module]}


class TestOutcome:
    def test_ready_failed_and_progressing_come_from_the_conditions(self) -> None:
        assert outcome(_spec("1"), _status(ready="True")) == "Ready"
        assert outcome(_spec("1"), _status(ready="False", validated="False")) == "Failed"
        assert outcome(_spec("1"), _status(ready="False")) == "Progressing"

    def test_a_rollout_of_this_specs_canary_that_ended_is_the_outcome(self) -> None:
        spec = _spec("1", canary="2")
        rolled = _status(ready="True", phase="RolledBack", canaryVersion="2")
        assert outcome(spec, rolled) == "RolledBack"
        promoted = _status(ready="True", phase="Promoted", canaryVersion="2")
        assert outcome(spec, promoted) == "Promoted"
        going = _status(ready="True", phase="Progressing", canaryVersion="2")
        assert outcome(spec, going) == "Ready"

    def test_a_router_still_reporting_the_previous_specs_rollout_does_not_count(self) -> None:
        # After a promotion the user sets version 2 and removes the canary: until the router
        # restarts it still reports the finished rollout, which is not this revision's.
        stale = _status(ready="True", phase="Promoted", canaryVersion="2")
        assert outcome(_spec("2"), stale) == "Ready"
        assert outcome(_spec("2", canary="3"), stale) == "Ready"


class TestHistory:
    def test_each_new_generation_is_a_new_revision_with_its_spec(self) -> None:
        one = revision_history(None, _spec("1"), 1, _status(), "t1")
        assert one == [
            {"revision": 1, "generation": 1, "appliedAt": "t1", "outcome": "Progressing",
             "spec": _spec("1")}
        ]  # fmt: skip
        ready = revision_history(one, _spec("1"), 1, _status(ready="True"), "t2")
        assert ready[-1]["outcome"] == "Ready" and ready[-1]["appliedAt"] == "t1"
        two = revision_history(ready, _spec("2"), 2, _status(ready="False"), "t3")
        assert [(r["revision"], r["generation"], r["outcome"]) for r in two] == [
            (1, 1, "Ready"),
            (2, 2, "Progressing"),
        ]
        assert two[-1]["spec"] == _spec("2")

    def test_an_outcome_reached_stays_while_the_revision_runs(self) -> None:
        ready = revision_history(None, _spec("1"), 1, _status(ready="True"), "t1")
        restarting = revision_history(ready, _spec("1"), 1, _status(ready="False"), "t2")
        assert restarting[-1]["outcome"] == "Ready"
        spec = _spec("1", canary="2")
        rolled = _status(ready="True", phase="RolledBack", canaryVersion="2")
        history = revision_history(None, spec, 1, rolled, "t1")
        assert history[-1]["outcome"] == "RolledBack"
        assert revision_history(history, spec, 1, _status(ready="True"), "t2") == history

    def test_only_the_last_ten_are_kept_and_numbers_keep_growing(self) -> None:
        history: list[dict[str, Any]] = []
        for generation in range(1, 15):
            history = revision_history(history, _spec(str(generation)), generation, {}, "t")
        assert len(history) == REVISION_LIMIT
        assert [r["revision"] for r in history] == list(range(5, 15))

    def test_the_status_model_accepts_the_history(self) -> None:
        history = revision_history(None, _spec("1", canary="2"), 1, _status(ready="True"), "t")
        status = ModuleGraphStatus.model_validate({"revisions": history})
        dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert dumped["revisions"] == history

    def test_modulemesh_status_lists_the_revisions(self) -> None:
        history = revision_history(None, _spec("1"), 1, _status(ready="True"), "t1")
        history = revision_history(history, _spec("2"), 2, _status(), "t2")
        graph = {
            "metadata": {"name": "g", "namespace": "ns", "generation": 2},
            "status": {"revisions": history},
        }
        out = io.StringIO()
        detail(graph, out)
        text = out.getvalue()
        assert "Revisions:" in text
        rows = [line.split() for line in text.split("Revisions:\n")[1].splitlines()]
        assert rows[:3] == [
            ["REVISION", "GENERATION", "APPLIED", "OUTCOME"],
            ["1", "1", "t1", "Ready"],
            ["2", "2", "t2", "Progressing"],
        ]


HISTORY = [{"revision": n, "generation": n, "spec": _spec(str(n))} for n in (3, 4, 5)]


class TestPick:
    def test_the_default_is_the_revision_before_the_current(self) -> None:
        assert pick(HISTORY, None, "ns/g")["revision"] == 4

    def test_a_named_revision(self) -> None:
        assert pick(HISTORY, 3, "ns/g")["spec"] == _spec("3")

    def test_a_revision_not_kept_is_named_with_the_kept_ones(self) -> None:
        with pytest.raises(RevisionError, match=r"revision 2 is not in graph ns/g's history "
                           r"\(kept: 3, 4, 5; the last 10 are kept\)"):  # fmt: skip
            pick(HISTORY, 2, "ns/g")

    def test_the_current_revision_and_no_previous_one_are_refused(self) -> None:
        with pytest.raises(RevisionError, match="already runs revision 5"):
            pick(HISTORY, 5, "ns/g")
        with pytest.raises(RevisionError, match="no revision before its current 3"):
            pick(HISTORY[:1], None, "ns/g")
        with pytest.raises(RevisionError, match="no revision history yet"):
            pick([], None, "ns/g")
