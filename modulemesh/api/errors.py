"""Spec problems as data: every problem names the exact field path and says what to do.

Validation collects all problems at once (never just the first); callers decide whether
warnings matter.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError


class Severity(StrEnum):
    """Errors refuse a graph; warnings are reported and the graph still runs."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem with a spec, at a field path such as ``spec.modules[0].batching``."""

    path: str
    message: str
    severity: Severity = Severity.ERROR
    rule: str = ""
    """Which check found it (e.g. ``privacy`` for the static privacy check); empty for schema."""

    def __str__(self) -> str:
        return f"{self.severity.value}: {self.path}: {self.message}"


class SpecError(ValueError):
    """A spec that cannot be used, with every problem found."""

    def __init__(self, issues: Sequence[Issue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(str(i) for i in self.issues))


def errors_only(issues: Iterable[Issue]) -> list[Issue]:
    """The issues that refuse a spec."""
    return [i for i in issues if i.severity is Severity.ERROR]


def format_path(loc: Sequence[str | int], prefix: str = "") -> str:
    """``("spec", "modules", 0, "name")`` -> ``spec.modules[0].name``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def issues_from_pydantic(error: ValidationError, prefix: str = "") -> list[Issue]:
    """Turn pydantic's errors into issues with camelCase field paths.

    Discriminated unions add the tag (``sequence``) and model-validator errors add nothing
    useful to the location; both are dropped so the path is the one a user writes in YAML.
    """
    issues: list[Issue] = []
    seen: set[tuple[str, str]] = set()
    for err in error.errors(include_url=False):
        loc = _without_union_tags(err["loc"])
        message = str(err["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            message = "unknown field (check its spelling and indentation)"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc, message = _discriminator_problem(loc, err.get("ctx") or {})
        key = (format_path(loc, prefix), message)
        if key not in seen:
            seen.add(key)
            issues.append(Issue(key[0], key[1]))
    return issues


def _without_union_tags(loc: Sequence[str | int]) -> list[str | int]:
    """Drop the discriminator tag pydantic inserts after a list index of a tagged union."""
    from modulemesh.api.gate import CLASSIFIER_TYPES
    from modulemesh.api.graph import NODE_TYPES

    tags = {*NODE_TYPES, *CLASSIFIER_TYPES}
    kept: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and part in tags and i > 0 and isinstance(loc[i - 1], int):
            continue
        kept.append(part)
    return kept


def _discriminator_problem(
    loc: list[str | int], ctx: dict[str, Any]
) -> tuple[list[str | int], str]:
    """Point a bad or missing ``type:`` at the field itself and list the valid values."""
    field = str(ctx.get("discriminator", "type")).strip("'")
    expected = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
    expected = [t for t in expected if t] or _union_tags(loc)
    choices = f"one of {', '.join(expected)}" if expected else "a known value"
    if "tag" not in ctx:
        return [*loc, field], f"required field is missing; set it to {choices}"
    close = difflib.get_close_matches(str(ctx["tag"]), expected, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return [*loc, field], f"unknown {field} {ctx['tag']!r}{hint} (expected {choices})"


def _union_tags(loc: Sequence[str | int]) -> list[str]:
    """The valid ``type`` values of the union at ``loc`` (pydantic omits them when missing)."""
    from modulemesh.api.gate import CLASSIFIER_TYPES
    from modulemesh.api.graph import NODE_TYPES

    parent = next((p for p in reversed(loc) if isinstance(p, str)), "")
    return {"nodes": list(NODE_TYPES), "classifiers": list(CLASSIFIER_TYPES)}.get(parent, [])
