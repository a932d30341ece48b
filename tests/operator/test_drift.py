"""Drift is judged on the operator's own intent and fields only: a child holding what was
applied needs no apply, whatever foreign fields it gained (a hand-added annotation, a rollout
restart's restartedAt); a changed rendering, a missing child or a field the operator applied
that someone else changed or removed (its field set no longer matches) does."""

from __future__ import annotations

import copy
from typing import Any

from modulemesh.operator.drift import (
    FIELDS_ANNOTATION,
    INTENT_ANNOTATION,
    PENDING,
    drift,
    needs_apply,
    with_fields,
    with_intent,
)

OURS: dict[str, Any] = {
    "f:metadata": {
        "f:annotations": {f"f:{INTENT_ANNOTATION}": {}, f"f:{FIELDS_ANNOTATION}": {}},
        "f:labels": {"f:app": {}},
    },
    "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {}}}},
}


def _desired(replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ns", "labels": {"app": "x"}},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c"}]}}},
    }


def _applied(desired: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns for an apply of ``desired``: it plus managedFields."""
    live = copy.deepcopy(desired)
    live["metadata"]["managedFields"] = [
        {"manager": "modulemesh-operator", "operation": "Apply", "fieldsType": "FieldsV1",
         "fieldsV1": copy.deepcopy(fields), "time": "2026-01-01T00:00:00Z"},
    ]  # fmt: skip
    live["status"] = {"readyReplicas": 1}
    return live


def _in_sync(replicas: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    """A desired object stamped as reconcile stamps it, and the child that applying it left."""
    desired = with_intent(_desired(replicas))
    learnt = _applied(desired, OURS)  # the dry run's answer
    final = with_fields(desired, learnt)
    return final, _applied(final, OURS)


# --- nothing to do ------------------------------------------------------------------------


def test_a_child_holding_what_was_applied_needs_no_apply() -> None:
    desired, live = _in_sync()
    assert needs_apply(with_intent(_desired()), live) is None
    assert drift(live) is None
    assert desired["metadata"]["annotations"][FIELDS_ANNOTATION] != PENDING


def test_a_hand_added_annotation_is_not_drift() -> None:
    _, live = _in_sync()
    live["metadata"]["annotations"]["team"] = "ml"
    live["metadata"]["managedFields"].append(
        {"manager": "kubectl-annotate", "operation": "Update", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:annotations": {"f:team": {}}}}}
    )  # fmt: skip
    assert needs_apply(with_intent(_desired()), live) is None
    assert drift(live) is None


def test_a_rollout_restart_is_not_drift() -> None:
    _, live = _in_sync()
    live["spec"]["template"]["metadata"] = {
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:01Z"}
    }
    live["metadata"]["managedFields"].append(
        {"manager": "kubectl-rollout", "operation": "Update", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:spec": {"f:template": {"f:metadata": {"f:annotations": {
             "f:kubectl.kubernetes.io/restartedAt": {}}}}}}}
    )  # fmt: skip
    assert needs_apply(with_intent(_desired()), live) is None


def test_the_intent_hash_ignores_its_own_annotations_and_key_order() -> None:
    a = with_intent(_desired())
    b = with_intent(with_intent(_desired()))
    reordered = dict(reversed(list(_desired().items())))
    assert (
        a["metadata"]["annotations"][INTENT_ANNOTATION]
        == b["metadata"]["annotations"][INTENT_ANNOTATION]
        == with_intent(reordered)["metadata"]["annotations"][INTENT_ANNOTATION]
    )


# --- drift --------------------------------------------------------------------------------


def test_an_owned_field_changed_by_someone_else_is_drift() -> None:
    _, live = _in_sync()
    live["spec"]["replicas"] = 5  # kubectl scale/edit: the field moves to their manager
    ours = copy.deepcopy(OURS)
    del ours["f:spec"]["f:replicas"]
    live["metadata"]["managedFields"][0]["fieldsV1"] = ours
    live["metadata"]["managedFields"].append(
        {"manager": "kubectl-edit", "operation": "Update", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    )  # fmt: skip
    why = needs_apply(with_intent(_desired()), live)
    assert why is not None and "kubectl-edit" in why
    assert drift(live) == why


def test_an_owned_field_removed_is_drift() -> None:
    _, live = _in_sync()
    del live["metadata"]["labels"]
    ours = copy.deepcopy(OURS)
    del ours["f:metadata"]["f:labels"]
    live["metadata"]["managedFields"][0]["fieldsV1"] = ours
    assert drift(live) is not None


def test_all_owned_fields_taken_over_is_drift() -> None:
    _, live = _in_sync()
    live["metadata"]["managedFields"] = [
        {"manager": "other", "operation": "Apply", "fieldsV1": OURS}
    ]
    assert drift(live) == "the operator's fields were taken over"


def test_a_changed_rendering_or_a_missing_child_needs_an_apply() -> None:
    _, live = _in_sync(replicas=1)
    assert needs_apply(with_intent(_desired(replicas=2)), live) == "rendered object changed"
    assert needs_apply(with_intent(_desired()), None) == "missing"


def test_a_child_applied_before_field_tracking_is_applied_once() -> None:
    live = _applied(_desired(), OURS)
    assert needs_apply(with_intent(_desired()), live) == "rendered object changed"
    live["metadata"]["annotations"] = {INTENT_ANNOTATION: "x"}
    assert drift(live) == "applied before field tracking"
