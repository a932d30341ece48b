"""A module's rollout in the graph's status: the router reports each rollout it walks in its
``GET /envelopes`` answer (``modules.<module>.rollout``); the operator copies it, checked
against :class:`~modulemesh.api.status.RolloutStatus`, into ``status.modules[].rollout``, which
``modulemesh status`` prints."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from modulemesh.api.status import RolloutStatus

__all__ = ["ROLLOUT_KEY", "rollout_status"]

ROLLOUT_KEY = "rollout"
"""Where a module's rollout rides in its parsed envelope (beside the envelope's own fields)."""


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
