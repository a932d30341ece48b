"""Which Events a reconcile posts: Warnings only for what needs a person (a new graph whose
pods are starting posts no Warning, and no NotReady either), Recovered after Degraded, Reconciled only when something
was applied or pruned, and the core v1 Event the operator's own client posts."""

from __future__ import annotations

from datetime import UTC, datetime

from modulemesh.operator.events import Event, event_object, events_for
from modulemesh.operator.reconcile import Outcome


def _outcome(
    transitions: list[tuple[str, str | None, str]],
    *,
    applied: int = 0,
    pruned: list[str] | None = None,
) -> Outcome:
    conditions = [
        {"type": t, "status": new, "reason": "R", "message": f"{t} is {new}"}
        for t, _, new in transitions
    ]
    return Outcome(
        valid=True,
        applied=applied,
        pruned=pruned or [],
        status={"conditions": conditions},
        transitions=transitions,
    )


# --- a graph coming up --------------------------------------------------------------------


def test_a_new_graph_whose_pods_start_posts_no_warning() -> None:
    first = _outcome(
        [
            ("Ready", None, "False"),
            ("Validated", None, "True"),
            ("Compliant", None, "True"),
            ("Scheduled", None, "Unknown"),
            ("ModulesReady", None, "False"),
            ("RouterReady", None, "False"),
            ("Degraded", None, "Unknown"),
        ],
        applied=7,
    )
    events = events_for(first, applied=True)
    assert [(e.type, e.reason) for e in events] == [("Normal", "Reconciled")]
    assert events[0].message == "applied 7 objects as modulemesh-operator"


def test_pods_placed_for_the_first_time_are_no_news_but_placed_again_are() -> None:
    assert events_for(_outcome([("Scheduled", "Unknown", "True")]), applied=False) == []
    assert events_for(_outcome([("Scheduled", "False", "True")]), applied=False) == [
        Event("Normal", "Scheduled", "Scheduled is True")
    ]


def test_a_new_graph_ready_at_its_first_reconcile_says_so() -> None:
    """Only Ready is news at a first reconcile (NotReady then is a graph starting)."""
    events = events_for(_outcome([("Ready", None, "True")]), applied=False)
    assert events == [Event("Normal", "Ready", "Ready is True")]


def test_ready_then_not_ready_is_normal_progress() -> None:
    assert events_for(_outcome([("Ready", "True", "False")]), applied=False) == [
        Event("Normal", "NotReady", "Ready is False")
    ]
    assert events_for(_outcome([("Ready", "False", "True")]), applied=False) == [
        Event("Normal", "Ready", "Ready is True")
    ]


# --- what needs a person ------------------------------------------------------------------


def test_causes_that_need_a_person_are_warnings() -> None:
    events = events_for(
        _outcome(
            [
                ("Validated", None, "False"),
                ("Scheduled", "Unknown", "False"),
                ("Compliant", "True", "False"),
                ("Degraded", "False", "True"),
            ]
        ),
        applied=False,
    )
    assert [(e.type, e.reason) for e in events] == [
        ("Warning", "Invalid"),
        ("Warning", "Unschedulable"),
        ("Warning", "NonCompliant"),
        ("Warning", "Degraded"),
    ]


def test_a_missing_gate_is_a_warning() -> None:
    events = events_for(_outcome([("Compliant", "True", "Unknown")]), applied=False)
    assert [(e.type, e.reason) for e in events] == [("Warning", "GateMissing")]


def test_degraded_then_healthy_is_recovered() -> None:
    events = events_for(_outcome([("Degraded", "True", "False")]), applied=False)
    assert events == [Event("Normal", "Recovered", "Degraded is False")]


def test_first_normal_conditions_other_than_ready_are_not_announced() -> None:
    assert events_for(_outcome([("Validated", None, "True")]), applied=False) == []


# --- Reconciled ---------------------------------------------------------------------------


def test_reconciled_only_when_something_was_applied_or_pruned() -> None:
    assert events_for(_outcome([], applied=0), applied=True) == []
    assert events_for(_outcome([], applied=2), applied=False) == []
    pruned = events_for(_outcome([], pruned=["Service/x"]), applied=True)
    assert pruned == [
        Event("Normal", "Reconciled", "applied 0 objects as modulemesh-operator, removed Service/x")
    ]


# --- the Event object ---------------------------------------------------------------------


def test_event_object_names_the_graph_and_the_operator() -> None:
    body = {
        "apiVersion": "modulemesh.io/v1alpha1",
        "kind": "ModuleGraph",
        "metadata": {"name": "g", "namespace": "team-a", "uid": "u-1", "resourceVersion": "7"},
    }
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    obj = event_object(body, Event("Warning", "Degraded", "x" * 5000), now=when)
    assert obj["metadata"] == {"generateName": "g.", "namespace": "team-a"}
    assert obj["involvedObject"] == {
        "apiVersion": "modulemesh.io/v1alpha1",
        "kind": "ModuleGraph",
        "name": "g",
        "namespace": "team-a",
        "uid": "u-1",
        "resourceVersion": "7",
    }
    assert (obj["type"], obj["reason"], len(obj["message"])) == ("Warning", "Degraded", 1000)
    assert obj["source"] == {"component": "modulemesh-operator"}
    assert obj["firstTimestamp"] == obj["lastTimestamp"] == "2026-01-02T03:04:05Z"
