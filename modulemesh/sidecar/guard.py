"""Compliance guard: a request's tags must all lie within the module's clearance.

The sidecar enforces this whatever the router decided, because the sidecar is the only way to
the model. The tags come from :class:`modulemesh.privacy.Classifier`, the router's own reading
of the request headers. Decisions are memoised per tag set (few distinct ones exist), so a
tagged request costs one dict lookup plus its audit record.
"""

from __future__ import annotations

from dataclasses import dataclass

from modulemesh import audit
from modulemesh.audit import Decision
from modulemesh.sidecar.config import Mode

__all__ = ["Guard", "Verdict"]

_MAX_MEMO = 1024


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome for one tag set."""

    decision: Decision
    tags: frozenset[str]
    reason: str

    @property
    def forwards(self) -> bool:
        """Whether the request goes on to the runtime."""
        return self.decision is not Decision.DENY


class Guard:
    """Checks tags against one module's clearance, in ``enforce`` or ``dryrun`` mode."""

    def __init__(self, module: str, clearance: frozenset[str], mode: Mode) -> None:
        self.module = module
        self.clearance = frozenset(tag.strip().lower() for tag in clearance if tag.strip())
        self.mode = mode
        self._memo: dict[frozenset[str], Verdict] = {}

    def check(self, tags: frozenset[str]) -> Verdict:
        """Verdict for a request's tags (non-empty, as the classifier derived them)."""
        verdict = self._memo.get(tags)
        if verdict is None:
            verdict = self._decide(tags)
            if len(self._memo) >= _MAX_MEMO:
                self._memo.clear()
            self._memo[tags] = verdict
        return verdict

    def record(self, verdict: Verdict, trace_id: str | None) -> None:
        """The audit record of a decision (HTTP proxy and gRPC relay alike)."""
        audit.emit(
            component="sidecar",
            module=self.module,
            tags=verdict.tags,
            decision=verdict.decision,
            reason=verdict.reason,
            trace_id=trace_id,
        )

    def _decide(self, tags: frozenset[str]) -> Verdict:
        uncleared = sorted(tags - self.clearance)
        if not uncleared:
            return Verdict(Decision.ALLOW, tags, f"tags cleared for module '{self.module}'")
        cleared = ",".join(sorted(self.clearance)) or "none"
        reason = (
            f"tag '{uncleared[0]}' is not in the clearance of module '{self.module}'"
            if len(uncleared) == 1
            else f"tags {', '.join(repr(t) for t in uncleared)} are not in the clearance "
            f"of module '{self.module}'"
        ) + f" (cleared: {cleared})"
        decision = Decision.DRYRUN_DENY if self.mode is Mode.DRYRUN else Decision.DENY
        return Verdict(decision, tags, reason)
