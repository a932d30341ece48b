"""``Promoted`` and ``RolledBack`` Events: a module's rollout reaching its end between the
graph's previous status and the one a reconcile computed (``status.modules[].rollout``, copied
from the router). One Event per end, whichever path refreshed the status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modulemesh.operator.events import MAX_MESSAGE, Event, EventType

__all__ = ["rollout_events"]

_ENDS: dict[str, tuple[EventType, str]] = {
    "Promoted": ("Normal", "Promoted"),
    "RolledBack": ("Warning", "RolledBack"),
}


def _phases(status: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    modules = (status or {}).get("modules") or []
    return {
        str(m.get("name")): m["rollout"]
        for m in modules
        if isinstance(m, Mapping) and isinstance(m.get("rollout"), Mapping)
    }


def rollout_events(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[Event]:
    """The Events for rollouts that ended between ``old`` and ``new`` status."""
    before = _phases(old)
    events: list[Event] = []
    for module, rollout in sorted(_phases(new).items()):
        phase = str(rollout.get("phase"))
        end = _ENDS.get(phase)
        if end is None or str((before.get(module) or {}).get("phase")) == phase:
            continue
        failing = [
            f"{f.get('name')} {f.get('canary')} (limit {f.get('limit')})"
            for f in rollout.get("figures") or []
            if isinstance(f, Mapping) and f.get("passed") is False
        ]
        message = (
            f"module {module}: version {rollout.get('stableVersion')} -> "
            f"{rollout.get('canaryVersion')} {phase} at step {rollout.get('step')}/"
            f"{rollout.get('steps')}: {rollout.get('reason', '')}"
        )
        if failing:
            message += f"; failing: {', '.join(failing)}"
        events.append(Event(end[0], end[1], message[:MAX_MESSAGE]))
    return events
