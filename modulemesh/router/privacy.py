"""Privacy-aware routing: which tags a request carries and which modules may receive it.

Tags come from ``x-modulemesh-tags`` and from the header classifiers of the graph's gates, read
by :class:`modulemesh.privacy.Classifier` exactly as the sidecars read them. A
module may receive a tagged request only when every tag is in its clearance and, for tags
whose gate restricts regions, the module runs in one of them: its ``region`` is one of them,
or it sets none and the gate enforces (the operator turns an enforcing gate's regions into
required node affinity, as :mod:`modulemesh.api.privacy_check` assumes). A violation of a
tag whose every gate is in ``dryrun`` mode is recorded and let through; anything else is
denied. Decisions are memoised per (module, tags): they depend on nothing else.

The gates' content classifiers run once per request, before any module is called
(:meth:`Privacy.inspect`, :class:`modulemesh.privacy.ContentScanner`): their hits add tags,
refuse the request or redact its text, each recorded in the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modulemesh import audit
from modulemesh.api.gate import GateMode, GateTag, PrivacyGateSpec
from modulemesh.api.graph import Module
from modulemesh.audit import Decision
from modulemesh.privacy import Classifier, ContentScanner, Inspection

__all__ = ["Clearance", "Privacy"]

COMPONENT = "router"


@dataclass(frozen=True, slots=True)
class Clearance:
    """The verdict for one module and one tag set."""

    allowed: bool
    reason: str
    dryrun: bool = False
    """Allowed only because the violated gates are in dry-run mode."""


_CLEAR = Clearance(True, "")


class Privacy:
    """The gates of one graph, compiled for per-request use."""

    def __init__(
        self,
        gates: Mapping[str, PrivacyGateSpec],
        modules: Mapping[str, Module],
        graph: str | None = None,
    ) -> None:
        self._modules = modules
        self.graph = graph
        self._tags: dict[str, list[tuple[str, GateMode, GateTag]]] = {}
        self.log_allowed = any(g.audit.log_allowed for g in gates.values())
        for gate_name, gate in gates.items():
            for tag in gate.tags:
                self._tags.setdefault(tag.name, []).append((gate_name, gate.mode, tag))
        self.classifier = Classifier.from_gates(gates.values())
        self.scanner = ContentScanner.from_gates(gates)
        """The gates' content classifiers; false when there are none (nothing to scan)."""
        self._memo: dict[tuple[str, frozenset[str]], Clearance] = {}

    def classify(self, fields: Mapping[str, str]) -> frozenset[str]:
        """The request's tags: those it declares plus those the gates' classifiers give it.

        ``fields`` are the request headers with repeated lines joined
        (:func:`modulemesh.headers.fields`); raises :class:`modulemesh.headers.HeaderError`.
        """
        return self.classifier.classify(fields)

    def check(self, module: str, tags: frozenset[str]) -> Clearance:
        """Whether ``module`` may receive a request with ``tags``."""
        if not tags:
            return _CLEAR
        key = (module, tags)
        verdict = self._memo.get(key)
        if verdict is None:
            verdict = self._check(self._modules[module], tags)
            if len(self._memo) < 4096:
                self._memo[key] = verdict
        return verdict

    def _check(self, module: Module, tags: frozenset[str]) -> Clearance:
        clearance = set(module.clearance)
        problems: list[str] = []
        enforced = False
        for tag in sorted(tags):
            defs = self._tags.get(tag, [])
            tag_enforced = not defs or any(mode is GateMode.ENFORCE for _, mode, _ in defs)
            if tag not in clearance:
                problems.append(f"tag {tag!r} is not in its clearance {sorted(clearance)}")
                enforced = enforced or tag_enforced
                continue
            for gate_name, mode, gate_tag in defs:
                regions = gate_tag.allowed_regions
                pinned = module.region is None and mode is GateMode.ENFORCE and bool(regions)
                if regions is not None and module.region not in regions and not pinned:
                    where = "has no region" if module.region is None else f"is in {module.region!r}"
                    problems.append(
                        f"tag {tag!r} may only be processed in {sorted(regions)} "
                        f"(gate {gate_name!r}) but the module {where}"
                    )
                    enforced = enforced or mode is GateMode.ENFORCE
        if not problems:
            return _CLEAR
        reason = f"module {module.name!r} is not cleared: " + "; ".join(problems)
        return Clearance(not enforced, reason, dryrun=not enforced)

    def cacheable(self, tags: frozenset[str]) -> bool:
        """Results for ``tags`` may be cached: untagged, or every gate marks every tag cacheable."""
        for tag in tags:
            defs = self._tags.get(tag)
            if not defs or not all(gate_tag.cacheable for _, _, gate_tag in defs):
                return False
        return True

    def record(
        self, module: str, tags: frozenset[str], verdict: Clearance, trace_id: str | None
    ) -> None:
        """Emit the audit record of a decision (allowed ones only when a gate asks for them)."""
        if verdict.allowed and not verdict.dryrun:
            if not self.log_allowed:
                return
            decision, reason = Decision.ALLOW, "cleared"
        else:
            decision = Decision.DRYRUN_DENY if verdict.dryrun else Decision.DENY
            reason = verdict.reason
        audit.emit(
            component=COMPONENT,
            module=module,
            tags=tags,
            decision=decision,
            reason=reason,
            trace_id=trace_id,
            graph=self.graph,
        )

    def record_inspection(self, inspection: Inspection, trace_id: str | None) -> None:
        """One audit record per gate tag whose content detectors hit (kinds and counts, never
        the text). Not tied to a module: it happens before any is chosen."""
        for finding in inspection.findings:
            decision = Decision(finding.action)
            if finding is inspection.denied:
                reason = inspection.refusal()
            else:
                reason = (
                    f"content detector {finding.detector} matched {finding.count} time"
                    f"{'' if finding.count == 1 else 's'} (tag {finding.tag!r}, action "
                    f"{finding.action})"
                )
            audit.emit(
                component=COMPONENT,
                module="",
                tags=(finding.tag,),
                decision=decision,
                reason=reason,
                trace_id=trace_id,
                graph=self.graph,
                gate=finding.gate,
                detectors=(finding.detector,),
            )
