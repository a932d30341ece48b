"""Headers -> compliance tags: the one implementation the router and the sidecar share, so a
request carries the same tags wherever it is checked.

A request's tags are those it names in ``x-modulemesh-tags`` plus those the gates' header
classifiers give it. Headers arrive as :func:`modulemesh.headers.fields` builds them: every
field line of a name joined into one comma-separated list (RFC 9110 §5.3), so a second line can
add to the first but never replace it. The rules fail closed:

* ``x-modulemesh-tags`` is read item by item; empty items name nothing and are skipped (tags
  only ever add up, so they cannot hide one), an item that is not a tag
  (:data:`~modulemesh.api.gate.TAG_PATTERN`, case-insensitive) is refused with
  :class:`~modulemesh.headers.HeaderError` naming the header (a 400).
* A classifier without ``values`` matches when its header is present, whatever the value.
* A classifier with ``values`` is matched item by item (trimmed, case-insensitive): it matches
  when any item is one of its values, and also when an item is empty or holds a double quote
  or backslash (a quoted string could hide a value or a comma): what cannot be read one way
  only counts as carrying the tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from modulemesh.api.gate import TAG_PATTERN, HeaderClassifier, PrivacyGateSpec
from modulemesh.headers import TAGS, HeaderError

__all__ = ["Classifier", "HeaderRule", "declared_tags"]

_TAG = re.compile(TAG_PATTERN)
_MAX_MEMO = 1024


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """One gate's header classifier, compiled: ``header`` (lower-case) gives ``tag``."""

    header: str
    tag: str
    values: frozenset[str] | None
    """Lower-cased values that select the tag; ``None``: any value, presence is enough."""

    @classmethod
    def of(cls, tag: str, classifier: HeaderClassifier) -> HeaderRule:
        """The rule for one classifier of the gate tag ``tag``."""
        values = classifier.values
        return cls(
            classifier.header.lower(),
            tag,
            None if values is None else frozenset(v.strip().lower() for v in values),
        )

    def matches(self, value: str) -> bool:
        """Whether a (joined) header value gives the tag; see the module docstring."""
        if self.values is None:
            return True
        for item in value.split(","):
            item = item.strip().lower()
            if not item or '"' in item or "\\" in item or item in self.values:
                return True
        return False


def declared_tags(value: str | None) -> frozenset[str]:
    """The tags named in an ``x-modulemesh-tags`` value (lower-cased; empty items skipped).

    Raises :class:`~modulemesh.headers.HeaderError` for an item that is not a tag."""
    if not value:
        return frozenset()
    tags: set[str] = set()
    for item in value.split(","):
        tag = item.strip().lower()
        if not tag:
            continue
        if _TAG.fullmatch(tag) is None:
            raise HeaderError(
                TAGS,
                f"{TAGS}: {item.strip()!r} is not a tag (lower-case letters, digits, '.', '_' "
                "and '-', at most 63 characters, starting and ending with a letter or digit)",
            )
        tags.add(tag)
    return frozenset(tags)


class Classifier:
    """The tag rules of a set of gates, compiled once and applied per request."""

    def __init__(self, rules: Iterable[HeaderRule] = ()) -> None:
        self.rules = tuple(rules)
        self.headers = frozenset({TAGS, *(rule.header for rule in self.rules)})
        """Every header that decides a request's tags (lower-case)."""
        self.raw_headers = frozenset(name.encode("latin-1") for name in self.headers)
        """The same names as bytes, to pick them out of an ASGI header list."""
        self._declared: dict[str, frozenset[str]] = {}

    @classmethod
    def from_gates(cls, gates: Iterable[PrivacyGateSpec]) -> Classifier:
        """The classifier of every header classifier of every tag of ``gates``."""
        return cls(
            HeaderRule.of(tag.name, classifier)
            for gate in gates
            for tag in gate.tags
            for classifier in tag.classifiers
            if isinstance(classifier, HeaderClassifier)
        )

    def classify(self, fields: Mapping[str, str]) -> frozenset[str]:
        """The request's tags from its headers (lower-case names, repeated lines joined).

        Raises :class:`~modulemesh.headers.HeaderError` (a 400) for an unreadable tags header.
        """
        declared = self._declared_tags(fields.get(TAGS))
        if not self.rules:
            return declared
        found = set(declared)
        for rule in self.rules:
            value = fields.get(rule.header)
            if value is not None and rule.tag not in found and rule.matches(value):
                found.add(rule.tag)
        return frozenset(found) if len(found) != len(declared) else declared

    def _declared_tags(self, value: str | None) -> frozenset[str]:
        """:func:`declared_tags`, memoised per value (few distinct tag lists exist)."""
        if not value:
            return frozenset()
        tags = self._declared.get(value)
        if tags is None:
            tags = declared_tags(value)
            if len(self._declared) >= _MAX_MEMO:
                self._declared.clear()
            self._declared[value] = tags
        return tags
