"""Which Events a reconcile deserves, and posting them with the operator's own API client.

Events go through the Kubernetes Events API (core ``v1`` ``events``) with the operator's
:class:`~modulemesh.operator.kube.Kube`, not ``kopf.event``: kopf's event queue exists only
inside its handlers, so events from the operator-wide refresh loop (Degraded, Recovered, a
graph becoming Ready) were lost with a ``LookupError`` while the status was still patched.

Warnings are for conditions that need a person (invalid spec, unschedulable, non-compliant,
a missing gate, degraded). ``NotReady`` is Normal: a rollout or a restarted pod are progress,
and whatever keeps a graph from Ready for a reason a person must fix has a Warning of its own.
A new graph posts ``Reconciled`` and, once it is, ``Ready``: no ``NotReady`` while its pods
start, no ``Scheduled`` when they are placed (a condition leaving ``Unknown`` for a good state
is no news; leaving ``False`` is). Each Event is an API write: at 1,000 graphs those were
thousands of writes of no news.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from modulemesh.operator.kube import EVENTS, FIELD_MANAGER, Kube, KubeError
from modulemesh.operator.reconcile import Outcome

log = logging.getLogger("modulemesh.operator")

EventType = Literal["Normal", "Warning"]

MAX_MESSAGE = 1000
"""The API server refuses event messages longer than 1 kB."""

CONDITION_EVENTS: dict[tuple[str, str], tuple[EventType, str]] = {
    # (condition, new status) -> (event type, reason)
    ("Validated", "False"): ("Warning", "Invalid"),
    ("Validated", "True"): ("Normal", "Validated"),
    ("Scheduled", "False"): ("Warning", "Unschedulable"),
    ("Scheduled", "True"): ("Normal", "Scheduled"),
    ("Compliant", "False"): ("Warning", "NonCompliant"),
    ("Compliant", "True"): ("Normal", "Compliant"),
    ("Compliant", "Unknown"): ("Warning", "GateMissing"),
    ("Degraded", "True"): ("Warning", "Degraded"),
    ("Ready", "True"): ("Normal", "Ready"),
    ("Ready", "False"): ("Normal", "NotReady"),
}
"""Events for condition transitions. ``Ready`` going False is Normal: while pods start or
restart it is progress, and every cause that needs a person (invalid spec, unschedulable,
non-compliant, a missing gate, degraded) has its own Warning."""


@dataclass(frozen=True, slots=True)
class Event:
    """One Event to post about a graph."""

    type: EventType
    reason: str
    message: str


def _condition(conditions: Any, type_: str) -> Mapping[str, Any] | None:
    for condition in conditions or []:
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return None


def events_for(outcome: Outcome, *, applied: bool) -> list[Event]:
    """The Events one reconcile should post about its graph.

    ``applied``: whether to announce what the reconcile applied or pruned (``Reconciled``).
    """
    events: list[Event] = []
    for condition, old, new in outcome.transitions:
        chosen = CONDITION_EVENTS.get((condition, new))
        if condition == "Degraded" and old == "True" and new == "False":
            chosen = ("Normal", "Recovered")
        settling = old in (None, "Unknown") and chosen is not None and chosen[0] == "Normal"
        if chosen is None or (settling and (condition, new) != ("Ready", "True")):
            continue  # a condition settling for the first time (pods scheduled) is no news
        now = _condition(outcome.status.get("conditions"), condition) or {}
        events.append(Event(chosen[0], chosen[1], str(now.get("message", ""))[:MAX_MESSAGE]))
    if applied and outcome.valid and (outcome.applied or outcome.pruned):
        pruned = f", removed {', '.join(outcome.pruned)}" if outcome.pruned else ""
        events.append(
            Event(
                "Normal",
                "Reconciled",
                f"applied {outcome.applied} objects as {FIELD_MANAGER}{pruned}",
            )
        )
    return events


INSTANCE = os.environ.get("POD_NAME") or socket.gethostname()
"""``reportingInstance``: the operator pod (or host) that posted."""


def event_object(
    body: Mapping[str, Any], event: Event, *, now: datetime | None = None
) -> dict[str, Any]:
    """The core ``v1`` Event about the object ``body``."""
    meta = body["metadata"]
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    involved = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "name": meta["name"],
        "namespace": meta["namespace"],
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {k: v for k, v in involved.items() if v is not None},
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:MAX_MESSAGE],
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": INSTANCE[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def post_events(kube: Kube, body: Mapping[str, Any], events: list[Event]) -> None:
    """Post ``events`` about ``body``; a refused post is logged, never raised (an Event is
    news, and losing one must not fail the reconcile that already patched the status)."""
    for event in events:
        try:
            kube.create(EVENTS, str(body["metadata"]["namespace"]), event_object(body, event))
        except KubeError as error:
            log.warning(
                "could not post %s event %s about %s/%s: %s",
                event.type,
                event.reason,
                body["metadata"].get("namespace"),
                body["metadata"].get("name"),
                error,
            )
