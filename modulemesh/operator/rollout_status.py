"""A module's rollout in the graph's status: the router reports each rollout it walks in its
``GET /envelopes`` answer (``modules.<module>.rollout``); the operator copies it, checked
against :class:`~modulemesh.api.status.RolloutStatus`, into ``status.modules[].rollout``, which
``modulemesh status`` prints."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from modulemesh.api.status import RolloutStatus

__all__ = ["ROLLOUT_KEY", "rollout_column", "rollout_status"]

ROLLOUT_KEY = "rollout"
"""Where a module's rollout rides in its parsed envelope (beside the envelope's own fields)."""


def rollout_column(modules: Any) -> str | None:
    """``status.rollout``, the ``kubectl get mg`` column: each module's rollout in a few words
    (``clf: Progressing 2/4 (20%)``, ``clf: RolledBack 1/4``), ``; ``-separated; None (the field
    removed) without one. A printer column shows only the first value a JSONPath yields, so
    ``.status.modules[*].rollout`` would show one of several."""
    parts = []
    for m in modules or []:
        r = m.get("rollout") if isinstance(m, dict) else None
        if not isinstance(r, dict):
            continue
        text = f"{m.get('name')}: {r.get('phase')} {r.get('step')}/{r.get('steps')}"
        if r.get("phase") == "Progressing":
            text += f" ({r.get('stepPercent')}%{' shadow' if r.get('shadow') else ''})"
        parts.append(text)
    return "; ".join(parts) or None


def rollout_status(raw: Any) -> dict[str, Any] | None:
    """The status form of a router's rollout summary; None when there is none or it does not
    read as one (a router of another version): status shows no rollout rather than garbage."""
    if raw is None:
        return None
    try:
        status = RolloutStatus.model_validate(raw)
    except ValidationError:
        return None
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)
