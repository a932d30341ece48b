"""``metav1.Condition`` bookkeeping, following the Kubernetes API conventions.

A condition keeps its ``lastTransitionTime`` while its status stays the same, even when its
reason or message changes; only a change of status moves the time. Pure functions, so the
rules are unit-tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]

CONDITION_ORDER = (
    "Ready",
    "Validated",
    "Compliant",
    "Scheduled",
    "ModulesReady",
    "RouterReady",
    "Degraded",
)
"""The order conditions are written in, so status documents are stable and diff cleanly."""


@dataclass(frozen=True, slots=True)
class ConditionUpdate:
    """What a reconcile concluded about one condition."""

    type: str
    status: Status
    reason: str
    message: str


def now_rfc3339() -> str:
    """The current time as Kubernetes writes it (seconds, ``Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    previous: Iterable[Mapping[str, Any]],
    updates: Iterable[ConditionUpdate],
    *,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Apply ``updates`` to ``previous`` and return the new list, in :data:`CONDITION_ORDER`.

    ``lastTransitionTime`` is kept from ``previous`` when a condition's status is unchanged.
    Conditions not named in ``updates`` are kept as they were.
    """
    by_type: dict[str, dict[str, Any]] = {str(c.get("type")): dict(c) for c in previous}
    for update in updates:
        old = by_type.get(update.type)
        transition = (
            old["lastTransitionTime"]
            if old is not None
            and old.get("status") == update.status
            and old.get("lastTransitionTime")
            else now
        )
        condition: dict[str, Any] = {
            "type": update.type,
            "status": update.status,
            "reason": update.reason,
            "message": update.message,
            "lastTransitionTime": transition,
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        by_type[update.type] = condition
    ordered = [by_type.pop(t) for t in CONDITION_ORDER if t in by_type]
    return ordered + [by_type[t] for t in sorted(by_type)]


def find(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    """The condition of ``type_``, or None."""
    return next((c for c in conditions if c.get("type") == type_), None)


def transitions(
    previous: Iterable[Mapping[str, Any]], current: Iterable[Mapping[str, Any]]
) -> list[tuple[str, str | None, str]]:
    """``(type, old status or None, new status)`` for every condition whose status changed."""
    old = {str(c.get("type")): c.get("status") for c in previous}
    return [
        (str(c["type"]), old.get(str(c["type"])), str(c["status"]))
        for c in current
        if old.get(str(c["type"])) != c["status"]
    ]
