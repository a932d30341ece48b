"""Whether an owned child needs applying: only the operator's own intent and fields count.

Each child is applied with two annotations:

- ``modulemesh.io/applied-intent``: a hash of the rendered object (the intent), so a reconcile
  that renders the same object again knows without asking the API server that nothing is new;
- ``modulemesh.io/owned-fields``: a hash of the field set server-side apply recorded for the
  operator's field manager (``managedFields``), learnt by a dry-run apply of the same object.

Someone else changing or removing a field the operator applied takes that field out of the
operator's field set (server-side apply moves ownership to whoever wrote it last), so the
field set no longer matches its hash: that is drift, and the next apply takes the field back.
Foreign fields (an annotation added by hand, ``kubectl rollout restart``'s ``restartedAt``, the
controllers' ``status``) leave the operator's field set alone: no apply, no ``Reconciled``
event. Pure functions, unit-tested on the API's JSON.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from modulemesh.operator.kube import FIELD_MANAGER

INTENT_ANNOTATION = "modulemesh.io/applied-intent"
FIELDS_ANNOTATION = "modulemesh.io/owned-fields"
PENDING = "pending"
"""The ``owned-fields`` value of the dry run that learns the field set (values are not part of
a field set, so the placeholder gives the same one as the real hash)."""


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def with_intent(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` annotated with the hash of itself (without our two annotations) and a
    placeholder field-set hash, ready for the dry run that learns the real one."""
    stamped = copy.deepcopy(dict(obj))
    meta = stamped.setdefault("metadata", {})
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items()
        if k not in (INTENT_ANNOTATION, FIELDS_ANNOTATION)
    }  # fmt: skip
    meta["annotations"] = annotations
    intent = _digest(stamped)
    meta["annotations"] = {**annotations, INTENT_ANNOTATION: intent, FIELDS_ANNOTATION: PENDING}
    return stamped


def with_fields(obj: Mapping[str, Any], applied: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` (from :func:`with_intent`) with the hash of the field set that applying it gave
    in ``applied`` (the dry run's answer)."""
    stamped = copy.deepcopy(dict(obj))
    stamped["metadata"]["annotations"][FIELDS_ANNOTATION] = fields_hash(applied)
    return stamped


def owned_fields(live: Mapping[str, Any]) -> Any:
    """The operator's ``fieldsV1`` on ``live`` (its server-side apply entry), or None."""
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if (
            entry.get("manager") == FIELD_MANAGER
            and entry.get("operation") == "Apply"
            and not entry.get("subresource")
        ):
            return entry.get("fieldsV1")
    return None


def fields_hash(live: Mapping[str, Any]) -> str:
    """The hash of the operator's field set on ``live``."""
    return _digest(owned_fields(live))


DIGEST_KEY = "modulemesh.io/owned-fields-digest"
"""Where a slimmed copy of an object (the operator's cache) keeps :func:`owned_digest` in its
``metadata``, instead of the operator's whole field set (kilobytes per Deployment)."""


def owned_digest(live: Mapping[str, Any]) -> str | None:
    """The hash of the operator's field set on ``live`` (precomputed on a slimmed copy), or
    None when the operator has no field set there."""
    meta = live.get("metadata") or {}
    if DIGEST_KEY in meta:
        digest = meta[DIGEST_KEY]
        return None if digest is None else str(digest)
    return None if owned_fields(live) is None else fields_hash(live)


def drift(live: Mapping[str, Any]) -> str | None:
    """Why ``live`` no longer holds what the operator applied, or None when it does."""
    recorded = _annotations(live).get(FIELDS_ANNOTATION)
    if recorded is None or recorded == PENDING:
        return "applied before field tracking"
    digest = owned_digest(live)
    if digest is None:
        return "the operator's fields were taken over"
    if digest != recorded:
        others = sorted(
            {
                str(e.get("manager"))
                for e in (live.get("metadata") or {}).get("managedFields") or []
                if e.get("manager") != FIELD_MANAGER
            }
        )
        return f"a field the operator applied was changed or removed (managers: {', '.join(others) or 'none'})"
    return None


def needs_apply(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> str | None:
    """Why ``desired`` (from :func:`with_intent`) must be applied over ``live``, or None."""
    if live is None:
        return "missing"
    if _annotations(live).get(INTENT_ANNOTATION) != _annotations(desired).get(INTENT_ANNOTATION):
        return "rendered object changed"
    return drift(live)
