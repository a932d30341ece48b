"""Condition bookkeeping: lastTransitionTime kept while status holds, order, transitions."""

from __future__ import annotations

from modulemesh.operator.conditions import ConditionUpdate, merge_conditions, transitions


def test_new_condition_gets_now_and_generation() -> None:
    merged = merge_conditions(
        [], [ConditionUpdate("Ready", "False", "Pending", "waiting")], generation=3, now="T1"
    )
    assert merged == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Pending",
            "message": "waiting",
            "lastTransitionTime": "T1",
            "observedGeneration": 3,
        }
    ]


def test_transition_time_kept_when_status_unchanged_even_if_reason_changes() -> None:
    first = merge_conditions(
        [], [ConditionUpdate("Ready", "False", "Pending", "a")], generation=1, now="T1"
    )
    second = merge_conditions(
        first, [ConditionUpdate("Ready", "False", "ModulesNotReady", "b")], generation=2, now="T2"
    )
    assert second[0]["lastTransitionTime"] == "T1"
    assert second[0]["reason"] == "ModulesNotReady"
    assert second[0]["observedGeneration"] == 2


def test_transition_time_moves_when_status_changes() -> None:
    first = merge_conditions(
        [], [ConditionUpdate("Ready", "False", "Pending", "a")], generation=1, now="T1"
    )
    second = merge_conditions(
        first, [ConditionUpdate("Ready", "True", "GraphReady", "ok")], generation=1, now="T2"
    )
    assert second[0]["lastTransitionTime"] == "T2"
    assert transitions(first, second) == [("Ready", "False", "True")]


def test_conditions_written_in_a_stable_order_and_unknown_types_kept() -> None:
    previous = [{"type": "Custom", "status": "True", "reason": "X", "lastTransitionTime": "T0"}]
    merged = merge_conditions(
        previous,
        [
            ConditionUpdate("Degraded", "False", "Healthy", ""),
            ConditionUpdate("Validated", "True", "Valid", ""),
            ConditionUpdate("Ready", "True", "GraphReady", ""),
        ],
        generation=None,
        now="T1",
    )
    assert [c["type"] for c in merged] == ["Ready", "Validated", "Degraded", "Custom"]
    assert "observedGeneration" not in merged[0]


def test_transitions_report_new_conditions_with_no_old_status() -> None:
    current = merge_conditions(
        [], [ConditionUpdate("Scheduled", "False", "Unschedulable", "")], generation=1, now="T"
    )
    assert transitions([], current) == [("Scheduled", None, "False")]
    assert transitions(current, current) == []
