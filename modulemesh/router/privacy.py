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

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modulemesh import audit, headers
from modulemesh.api.gate import DifferentialPrivacy, GateMode, GateTag, PrivacyGateSpec
from modulemesh.api.graph import Module
from modulemesh.audit import Decision
from modulemesh.privacy import Classifier, ContentScanner, Inspection
from modulemesh.privacy.dp import Noiser
from modulemesh.privacy.ledger import Charge, Ledger, LedgerError
from modulemesh.router.errors import RouteError

__all__ = ["BudgetRefused", "Clearance", "DpGate", "GateCounts", "Privacy"]

COMPONENT = "router"


@dataclass(frozen=True, slots=True)
class Clearance:
    """The verdict for one module and one tag set."""

    allowed: bool
    reason: str
    dryrun: bool = False
    """Allowed only because the violated gates are in dry-run mode."""


_CLEAR = Clearance(True, "")


@dataclass(frozen=True, slots=True)
class DpGate:
    """One gate's differential privacy on one module: who pays, how much, and the noise."""

    gate: str
    spec: DifferentialPrivacy
    noiser: Noiser

    def account(self, namespace: str, principal: str) -> str:
        """The ledger account of ``principal`` under this gate (gates are namespaced)."""
        return f"{namespace}/{self.gate}/{principal}"


@dataclass
class GateCounts:
    """What one gate did in this router process (since it started), for the gate's status."""

    detector_hits: Counter[str] = field(default_factory=Counter)
    """``tag/detector`` -> matches found."""
    redactions: int = 0
    denials: int = 0
    dp_answers: int = 0
    dp_refusals: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form in ``GET /envelopes``' compliance part."""
        return {
            "detectorHits": dict(sorted(self.detector_hits.items())),
            "redactions": self.redactions,
            "denials": self.denials,
            "dpAnswers": self.dp_answers,
            "dpRefusals": self.dp_refusals,
        }


class BudgetRefused(RouteError):
    """429: the answer would take a principal over its privacy budget; says what is left and
    when the window resets, in the body and in headers."""

    def __init__(self, message: str, budget: dict[str, Any], retry_after: int) -> None:
        super().__init__(429, message, retry_after=retry_after, fallback=False)
        self.budget = budget


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


class Privacy:
    """The gates of one graph, compiled for per-request use."""

    def __init__(
        self,
        gates: Mapping[str, PrivacyGateSpec],
        modules: Mapping[str, Module],
        graph: str | None = None,
        *,
        namespace: str = "default",
        ledger: Ledger | None = None,
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
        self.namespace = namespace
        self.ledger = ledger
        self.dp: dict[str, list[DpGate]] = {}
        """Module -> the gates that noise its outputs (only modules of this graph)."""
        for gate_name, gate in sorted(gates.items()):
            dp = gate.differential_privacy
            if dp is None:
                continue
            by_module: dict[str, list[Any]] = {}
            for out in dp.outputs:
                if out.module in modules:
                    by_module.setdefault(out.module, []).append(out)
            for module, outs in by_module.items():
                self.dp.setdefault(module, []).append(DpGate(gate_name, dp, Noiser(module, outs)))
        if self.dp and ledger is None:
            names = sorted({g.gate for gs in self.dp.values() for g in gs})
            raise ValueError(
                f"gate(s) {', '.join(names)} declare differentialPrivacy for module(s) "
                f"{', '.join(sorted(self.dp))}: their budgets need a ledger every router "
                "replica shares (--dp-ledger, or MODULEMESH_ROUTER_DP_LEDGER)"
            )
        self.budgets = {g.gate: g.spec for gs in self.dp.values() for g in gs}
        """Gate -> its differential privacy, for the gates that apply to this graph."""
        self.counts: dict[str, GateCounts] = {name: GateCounts() for name in gates}
        self.instance = uuid.uuid4().hex
        """This router process, so the operator can add up replicas' counts."""
        self.started = time.time()

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
            if not verdict.dryrun:
                for gate in self._gates_of(tags):
                    self.counts[gate].denials += 1
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
            counts = self.counts[finding.gate]
            counts.detector_hits[f"{finding.tag}/{finding.detector}"] += finding.count
            if decision is Decision.REDACT:
                counts.redactions += finding.count
            elif finding is inspection.denied:
                counts.denials += 1
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

    def _gates_of(self, tags: frozenset[str]) -> set[str]:
        """The gates that declare any of ``tags``."""
        return {gate for tag in tags for gate, _, _ in self._tags.get(tag, [])}

    # -- differential privacy -------------------------------------------------------------------

    async def reserve(
        self, module: str, fields: Mapping[str, str], trace_id: str | None
    ) -> list[tuple[DpGate, Charge]]:
        """Charge every gate that noises ``module``'s outputs for one answer, before the call
        (reserve-before-answer). Raises :class:`RouteError` (400) for a missing or ambiguous
        principal, :class:`BudgetRefused` (429) when a budget would be exceeded, and 503 when
        the ledger fails: all fail closed."""
        charges: list[tuple[DpGate, Charge]] = []
        for dp_gate in self.dp.get(module, ()):
            spec = dp_gate.spec
            header = spec.principal.header.lower()
            try:
                principal = headers.single(header, fields.get(header))
            except headers.HeaderError as exc:
                raise RouteError(400, f"{exc.message} (it names the principal whose privacy "
                                 f"budget pays for module {module!r}'s answers, gate "
                                 f"{dp_gate.gate!r})", module=module, fallback=False) from None  # fmt: skip
            if not principal:
                raise RouteError(
                    400,
                    f"module {module!r} answers only with differential privacy (gate "
                    f"{dp_gate.gate!r}), paid from the budget of the principal named in "
                    f"{header}; the request has none",
                    module=module, fallback=False,
                )  # fmt: skip
            noiser = dp_gate.noiser
            budget = spec.budget
            assert self.ledger is not None
            try:
                charge = await asyncio.to_thread(
                    self.ledger.charge, dp_gate.account(self.namespace, principal),
                    noiser.epsilon, noiser.delta, budget,
                )  # fmt: skip
            except LedgerError as exc:
                raise RouteError(
                    503, f"module {module!r}: privacy budget not available: {exc}",
                    module=module, fallback=False, retry_after=1,
                ) from None  # fmt: skip
            counts = self.counts[dp_gate.gate]
            cost = f"epsilon {noiser.epsilon:g}" + (
                f", delta {noiser.delta:g}" if noiser.delta else ""
            )
            left = f"epsilon {charge.remaining_epsilon:g}" + (
                f", delta {charge.remaining_delta:g}" if budget.delta else ""
            )
            window = f"window resets at {_iso(charge.reset_at)}"
            if not charge.granted:
                counts.dp_refusals += 1
                self._record_budget(
                    Decision.BUDGET_REFUSE, module, dp_gate.gate, trace_id,
                    f"principal {principal!r} would exceed its privacy budget: an answer costs "
                    f"{cost}, {left} remains; {window}",
                )  # fmt: skip
                retry = max(1, int(charge.reset_at - time.time() + 0.999))
                raise BudgetRefused(
                    f"privacy budget exhausted: an answer of module {module!r} costs {cost} "
                    f"(gate {dp_gate.gate!r}) and principal {principal!r} has {left} left in "
                    f"this window; it resets at {_iso(charge.reset_at)} (in {retry} s)",
                    self._budget_body(dp_gate, principal, charge, retry), retry,
                )  # fmt: skip
            counts.dp_answers += 1
            self._record_budget(
                Decision.BUDGET_SPEND, module, dp_gate.gate, trace_id,
                f"principal {principal!r} spent {cost} on a noisy answer ({left} left; "
                f"{window})",
            )  # fmt: skip
            charges.append((dp_gate, charge))
        return charges

    def _budget_body(
        self, dp_gate: DpGate, principal: str, charge: Charge, retry: int
    ) -> dict[str, Any]:
        """The ``budget`` part of a 429's body."""
        budget = dp_gate.spec.budget
        return {
            "gate": dp_gate.gate,
            "principal": principal,
            "cost": {"epsilon": dp_gate.noiser.epsilon, "delta": dp_gate.noiser.delta},
            "budget": {"epsilon": budget.epsilon, "delta": budget.delta},
            "spent": {"epsilon": charge.spent_epsilon, "delta": charge.spent_delta},
            "remaining": {"epsilon": charge.remaining_epsilon, "delta": charge.remaining_delta},
            "windowSeconds": budget.window_seconds,
            "windowStart": _iso(charge.window_start),
            "resetAt": _iso(charge.reset_at),
            "retryAfterSeconds": retry,
        }

    def _record_budget(
        self, decision: Decision, module: str, gate: str, trace_id: str | None, reason: str
    ) -> None:
        audit.emit(
            component=COMPONENT, module=module, tags=(), decision=decision, reason=reason,
            trace_id=trace_id, graph=self.graph, gate=gate,
        )  # fmt: skip

    def compliance(self) -> dict[str, Any]:
        """The compliance part of ``GET /envelopes``: per gate, what this process counted
        (since it started) and, for budgets, the ledger's current window (every replica's)."""
        gates: dict[str, Any] = {}
        for name, counts in sorted(self.counts.items()):
            entry = counts.to_dict()
            dp = self.budgets.get(name)
            if dp is not None and self.ledger is not None:
                try:
                    usage = self.ledger.usage(f"{self.namespace}/{name}/", dp.budget.window_seconds)
                except LedgerError as exc:
                    entry["budget"] = {"error": str(exc)}
                else:
                    entry["budget"] = {
                        "epsilon": dp.budget.epsilon,
                        "windowStart": _iso(usage.window_start),
                        "resetAt": _iso(usage.reset_at),
                        "principals": usage.principals,
                        "spentEpsilon": usage.spent_epsilon,
                        "maxSpentEpsilon": usage.max_spent_epsilon,
                    }
            gates[name] = entry
        return {"instance": self.instance, "started": self.started, "gates": gates}
