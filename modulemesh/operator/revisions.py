"""A graph's revision history: the last :data:`REVISION_LIMIT` specs it ran, each with its
generation, when the operator first saw it and how it ended, in ``status.revisions``.

Kept in the graph's status rather than in ControllerRevision objects (as Deployments and
StatefulSets do): the history is read and written with the status the operator already patches,
needs no other RBAC, objects or watch, and is gone with the graph. The cost is the status's size,
bounded by ten specs. ``modulemesh rollback`` reads it and applies a revision's spec back; that
spec is a new generation and so a new revision (numbers only grow, as a Deployment's do).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["REVISION_LIMIT", "RevisionError", "outcome", "pick", "revision_history"]

REVISION_LIMIT = 10
"""How many revisions a graph's status keeps (the newest)."""

_RANK = {"Progressing": 0, "Ready": 1, "Failed": 1, "Promoted": 2, "RolledBack": 2}
"""An outcome is replaced only by one of the same or a higher rank: a rollout's end is the
revision's news even after its router restarts and reports no rollout any more."""


class RevisionError(LookupError):
    """The revision asked for is not in the graph's history (the message names what is)."""


def _canaries(spec: Mapping[str, Any]) -> dict[str, str]:
    """Module name -> its canary's version, for the modules of ``spec`` that declare one."""
    return {
        str(m.get("name")): str((m.get("canary") or {}).get("version"))
        for m in spec.get("modules") or []
        if isinstance(m, Mapping) and isinstance(m.get("canary"), Mapping)
    }


def _condition(status: Mapping[str, Any], type_: str) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


def outcome(spec: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    """How the revision with ``spec`` stands in ``status``: ``RolledBack`` or ``Promoted`` when
    a rollout of this spec's canary ended (a router still reporting the previous spec's rollout
    does not count), ``Failed`` when the spec is invalid, ``Ready``, else ``Progressing``."""
    canaries = _canaries(spec)
    phases = {
        str(r.get("phase"))
        for m in status.get("modules") or []
        if isinstance(r := m.get("rollout"), Mapping)
        and canaries.get(str(m.get("name"))) == str(r.get("canaryVersion"))
    }
    for phase in ("RolledBack", "Promoted"):
        if phase in phases:
            return phase
    if _condition(status, "Validated") == "False":
        return "Failed"
    if _condition(status, "Ready") == "True":
        return "Ready"
    return "Progressing"


def revision_history(
    previous: Sequence[Mapping[str, Any]] | None,
    spec: Mapping[str, Any],
    generation: int | None,
    status: Mapping[str, Any],
    now: str,
) -> list[dict[str, Any]]:
    """``previous`` with the current spec's revision added (a new generation) or its outcome
    brought up to date. An outcome once reached stays until one of its rank or higher is
    (:data:`_RANK`: a Ready revision whose pod restarts is still the revision that became Ready).
    """
    revisions = [dict(r) for r in previous or [] if isinstance(r, Mapping)]
    result = outcome(spec, status)
    current = revisions[-1] if revisions else None
    if current is None or current.get("generation") != generation:
        number = max((int(r.get("revision", 0)) for r in revisions), default=0) + 1
        current = {"revision": number, "generation": generation, "appliedAt": now}
        current["outcome"] = result
        current["spec"] = dict(spec)
        revisions.append(current)
    elif _RANK[result] >= _RANK.get(str(current.get("outcome")), 0):
        current["outcome"] = result
    return revisions[-REVISION_LIMIT:]


def pick(revisions: Sequence[Mapping[str, Any]], to: int | None, graph: str) -> Mapping[str, Any]:
    """The revision ``modulemesh rollback`` returns to: ``to``, or the one before the current
    (the newest); :class:`RevisionError` naming the kept revisions when there is none such."""
    kept = ", ".join(str(r.get("revision")) for r in revisions) or "none"
    if not revisions:
        raise RevisionError(f"graph {graph} has no revision history yet (is the operator running?)")
    current = revisions[-1]
    if to is None:
        if len(revisions) < 2:
            raise RevisionError(
                f"graph {graph} has no revision before its current {current.get('revision')} "
                f"(kept: {kept})"
            )
        return revisions[-2]
    for r in revisions:
        if r.get("revision") == to:
            if r is current:
                raise RevisionError(f"graph {graph} already runs revision {to}")
            return r
    raise RevisionError(
        f"revision {to} is not in graph {graph}'s history (kept: {kept}; "
        f"the last {REVISION_LIMIT} are kept)"
    )
