"""Content inspection of a request: the gates' detectors run over its text, then the tags'
actions apply (``tag``, ``deny``, ``redact``).

The text of a request is every element of its BYTES input tensors (read as UTF-8; bytes
that are not UTF-8 are kept as they are and never match) and every string value of its
request-level ``parameters``. Numeric tensors, per-input parameters and non-string
parameter values are not read (see docs/privacy.md).

One pass per text: each distinct detector runs once over the normalised text
(:func:`modulemesh.privacy.detectors.normalize`), and each tag whose classifier uses that
detector gets its hits. What a hit does depends on the tag's action and its gate's mode:

* ``tag``: the request gets the tag (routing, clearance and residency then apply exactly as
  for a declared tag);
* ``deny``: the request is refused (403) naming the gate, tag and detector, never the text;
* ``redact``: each matched span, in the original text, is replaced by the detector's
  placeholder (``<EMAIL>``) before any module sees the request; the tag is not added, as the
  data is gone. Overlapping spans merge into one placeholder (the earliest's).

A gate in ``dryrun`` mode only records its ``deny`` and ``redact`` hits (``dryrun-deny``,
``dryrun-redact``) and adds the tag, since the data still travels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modulemesh import oip
from modulemesh.api.gate import (
    ContentClassifier,
    DetectorKind,
    GateMode,
    PrivacyGateSpec,
    TagAction,
)
from modulemesh.privacy.detectors import Detector, builtin, custom, normalize

__all__ = ["ContentScanner", "Finding", "Inspection", "Rule"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One content classifier of one gate tag, compiled."""

    gate: str
    tag: str
    action: TagAction
    enforce: bool
    detector: Detector

    @property
    def effective(self) -> str:
        """The action taken on a hit: ``tag``, ``deny``, ``redact`` or a ``dryrun-`` one."""
        if self.action is TagAction.TAG or self.enforce:
            return self.action.value
        return f"dryrun-{self.action.value}"


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's hits in one request: how many, never what they were."""

    gate: str
    tag: str
    detector: str
    action: str
    count: int

    def explain(self) -> dict[str, Any]:
        """The finding as explain output shows it."""
        return {
            "gate": self.gate,
            "tag": self.tag,
            "detector": self.detector,
            "action": self.action,
            "count": self.count,
        }


@dataclass
class Inspection:
    """What the detectors found in a request and what follows from it."""

    findings: list[Finding] = field(default_factory=list)
    tags: frozenset[str] = frozenset()
    """Tags the request gets from its content (action ``tag``, or any dry-run hit)."""
    denied: Finding | None = None
    """The first enforced ``deny`` finding: the request must be refused."""
    redacted: dict[str, int] = field(default_factory=dict)
    """Spans replaced, by detector label."""
    body: bytes | None = None
    """The request rebuilt with the redacted text (``None``: nothing was redacted)."""
    header_length: int | None = None

    def refusal(self) -> str:
        """The 403 message of a denied request (names gate, tag and detector, not the text)."""
        assert self.denied is not None
        found = self.denied
        return (
            f"request refused by privacy gate {found.gate!r}: its content carries tag "
            f"{found.tag!r} (detector {found.detector}, {found.count} match"
            f"{'' if found.count == 1 else 'es'}), which the gate denies"
        )


class ContentScanner:
    """The content classifiers of a set of gates, compiled once (patterns included)."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules = tuple(rules)
        detectors: dict[str, Detector] = {}
        for rule in self.rules:
            detectors.setdefault(rule.detector.label, rule.detector)
        self.detectors = tuple(detectors.values())

    @classmethod
    def from_gates(cls, gates: Mapping[str, PrivacyGateSpec]) -> ContentScanner:
        """Every content classifier of every tag of ``gates`` (keyed by gate name)."""
        rules: list[Rule] = []
        compiled: dict[tuple[str, str | None, str | None], Detector] = {}
        for gate_name, gate in sorted(gates.items()):
            for tag in gate.tags:
                for classifier in tag.classifiers:
                    if not isinstance(classifier, ContentClassifier):
                        continue
                    name = classifier.format or classifier.name
                    key = (classifier.detector.value, name, classifier.pattern)
                    detector = compiled.get(key)
                    if detector is None:
                        detector = compiled[key] = _detector(classifier)
                    enforce = gate.mode is GateMode.ENFORCE
                    rules.append(Rule(gate_name, tag.name, tag.action, enforce, detector))
        return cls(rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def scan(self, texts: list[str]) -> tuple[Inspection, list[str] | None]:
        """Run every rule over ``texts``; returns the inspection and the redacted texts
        (``None`` when nothing was redacted)."""
        counts: dict[int, int] = {}
        redacted_texts: list[str] | None = None
        redacted: dict[str, int] = {}
        for position, text in enumerate(texts):
            if not text:
                continue
            norm, index = normalize(text)
            spans_by_label = {d.label: list(d.find(norm)) for d in self.detectors}
            cuts: list[tuple[int, int, str, str]] = []
            for number, rule in enumerate(self.rules):
                spans = spans_by_label[rule.detector.label]
                if not spans:
                    continue
                counts[number] = counts.get(number, 0) + len(spans)
                if rule.action is TagAction.REDACT and rule.enforce:
                    detector = rule.detector
                    for start, end in spans:
                        if index is not None:
                            start, end = index[start], index[end - 1] + 1
                        cuts.append((start, end, detector.placeholder, detector.label))
            if cuts:
                if redacted_texts is None:
                    redacted_texts = list(texts)
                redacted_texts[position], replaced = _apply(text, cuts)
                for *_, label in replaced:
                    redacted[label] = redacted.get(label, 0) + 1
        inspection = Inspection(redacted=redacted)
        tags: set[str] = set()
        for number, count in sorted(counts.items()):
            rule = self.rules[number]
            finding = Finding(rule.gate, rule.tag, rule.detector.label, rule.effective, count)
            inspection.findings.append(finding)
            if rule.action is TagAction.TAG or not rule.enforce:
                tags.add(rule.tag)
            elif rule.action is TagAction.DENY and inspection.denied is None:
                inspection.denied = finding
        inspection.tags = frozenset(tags)
        return inspection, redacted_texts

    def inspect(self, head: oip.RequestHead, header_length: int | None) -> Inspection:
        """Scan a request's text; when something was redacted, ``body``/``header_length``
        hold the request rebuilt with it (same format, ids, outputs and parameters).

        Raises :class:`modulemesh.oip.ProtocolError` when the tensors do not decode."""
        texts: list[str] = []
        where: list[tuple[str, str, int]] = []
        parameters = head.parameters
        for key, value in parameters.items():
            if isinstance(value, str):
                texts.append(value)
                where.append(("parameter", key, 0))
        request: oip.InferRequest | None = None
        if _has_bytes(head):
            request = head.decode()
            for name, array in request.inputs.items():
                if array.dtype != object:
                    continue
                for flat_index, item in enumerate(array.reshape(-1)):
                    raw = item if isinstance(item, bytes) else bytes(item)
                    texts.append(raw.decode("utf-8", "surrogateescape"))
                    where.append(("input", name, flat_index))
        if not texts:
            return Inspection()
        inspection, new_texts = self.scan(texts)
        if new_texts is None or inspection.denied is not None:
            return inspection
        if request is None:
            request = head.decode()
        new_parameters = dict(parameters)
        new_inputs = dict(request.inputs)
        copied: set[str] = set()
        for (kind, name, flat_index), old, new in zip(where, texts, new_texts, strict=True):
            if old == new:
                continue
            if kind == "parameter":
                new_parameters[name] = new
                continue
            if name not in copied:
                new_inputs[name] = np.array(new_inputs[name], dtype=object, copy=True)
                copied.add(name)
            flat = new_inputs[name].reshape(-1)
            flat[flat_index] = new.encode("utf-8", "surrogateescape")
        inspection.body, inspection.header_length = oip.encode_request(
            new_inputs,
            outputs=request.outputs,
            binary=header_length is not None,
            binary_data_output=request.binary_data_output,
            id=request.id,
            parameters=new_parameters,
            input_parameters=request.input_parameters,
        )
        return inspection


def _detector(classifier: ContentClassifier) -> Detector:
    if classifier.detector is DetectorKind.REGEX:
        assert classifier.name is not None and classifier.pattern is not None
        return custom(classifier.name, classifier.pattern)
    return builtin(classifier.detector, classifier.format)


def _has_bytes(head: oip.RequestHead) -> bool:
    raw = head.header.get("inputs")
    return isinstance(raw, list) and any(
        isinstance(t, dict) and t.get("datatype") == "BYTES" for t in raw
    )


def _apply(
    text: str, cuts: list[tuple[int, int, str, str]]
) -> tuple[str, list[tuple[int, int, str, str]]]:
    """``text`` with each span replaced by its placeholder; overlapping spans merge (the
    earliest span's placeholder and label stay). Returns the text and the merged spans."""
    cuts.sort()
    merged: list[tuple[int, int, str, str]] = []
    for start, end, placeholder, label in cuts:
        if merged and start < merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], end), last[2], last[3])
        else:
            merged.append((start, end, placeholder, label))
    out: list[str] = []
    position = 0
    for start, end, placeholder, _ in merged:
        out.append(text[position:start])
        out.append(placeholder)
        position = end
    out.append(text[position:])
    return "".join(out), merged
