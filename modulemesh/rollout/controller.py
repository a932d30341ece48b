"""One module's rollout as a state machine: which version a call goes to, the two versions'
windows of the current step, and the step walk (hold, judge, advance, promote or roll back).

Pure and clock-injected, so the walk is tested without processes; the router drives it
(:mod:`modulemesh.rollout.traffic`). A call goes to the canary when its key (the request's trace
id) hashes below the step's percent: the same trace id always takes the same version at the
same step, so a request can be replayed onto the version that served it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from modulemesh.api.graph import RolloutPolicy, RolloutStep, RolloutTolerances
from modulemesh.rollout.analysis import Figure, Tolerances, Window, compare

__all__ = ["Controller", "Phase", "Route", "Transition", "bucket", "tolerances_of"]


class Phase(StrEnum):
    """Where a rollout is: walking its steps, or done one way or the other."""

    PROGRESSING = "Progressing"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"


class Route(StrEnum):
    """Where one call goes."""

    STABLE = "stable"
    CANARY = "canary"
    SHADOW = "shadow"
    """Served by stable; a copy goes to the canary, whose answer is compared, not served."""


@dataclass(frozen=True)
class Transition:
    """What one evaluation decided: a step passed (``StepPassed``), ``Promoted`` or
    ``RolledBack``, with the reason and the figures it was decided on."""

    kind: str
    step: int
    percent: int
    reason: str
    figures: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """JSON form for status and logs."""
        return {
            "type": self.kind,
            "step": self.step,
            "percent": self.percent,
            "reason": self.reason,
            "figures": self.figures,
        }


def bucket(module: str, key: str) -> float:
    """A call's place in [0, 100): a hash of the module and key, so each module splits its own
    way and the same key always lands in the same place."""
    digest = hashlib.sha256(f"{module}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def tolerances_of(spec: RolloutTolerances) -> Tolerances:
    """The analysis tolerances a policy declares."""
    return Tolerances(
        max_error_rate_increase=spec.max_error_rate_increase,
        max_p99_ratio=spec.max_p99_ratio,
        latency_grace_ms=spec.latency_grace_ms,
        max_confidence_drop=spec.max_confidence_drop,
        max_confidence_psi=spec.max_confidence_psi,
        max_confidence_ks=spec.max_confidence_ks,
        min_samples=spec.min_samples,
    )


class Controller:
    """The rollout of one module's canary by its policy."""

    def __init__(
        self,
        module: str,
        policy: RolloutPolicy,
        *,
        stable_version: str,
        canary_version: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.module = module
        self.policy = policy
        self.steps: list[RolloutStep] = list(policy.steps)
        self.tolerances = tolerances_of(policy.tolerances)
        self.stable_version = stable_version
        self.canary_version = canary_version
        self.clock = clock
        self.phase = Phase.PROGRESSING
        self.reason = ""
        self.step = 0
        self.history: list[Transition] = []
        self.baseline: tuple[int, Window] | None = None
        """The latest stable window with enough calls, and its step: the reference of a step
        in which stable serves (almost) nothing, such as 100 %."""
        self.last_verdict: dict[str, Any] | None = None
        self._start_step(0)

    # -- the data path ----------------------------------------------------------------------

    def route(self, key: str) -> Route:
        """Where a call with this key goes now."""
        if self.phase is Phase.PROMOTED:
            return Route.CANARY
        if self.phase is Phase.ROLLED_BACK:
            return Route.STABLE
        step = self.steps[self.step]
        if bucket(self.module, key) >= step.percent:
            return Route.STABLE
        return Route.SHADOW if step.shadow else Route.CANARY

    @property
    def recording(self) -> bool:
        """Calls are measured only while the rollout walks its steps."""
        return self.phase is Phase.PROGRESSING

    def record(self, route: Route, latency_ms: float, ok: bool, confidence: float | None) -> None:
        """One call of a version (``Route.STABLE`` or ``Route.CANARY``) in the current step."""
        if not self.recording:
            return
        window = self.canary if route is Route.CANARY else self.stable
        window.record(latency_ms, ok, confidence)

    def record_agreement(self, agrees: bool) -> None:
        """One shadow comparison of the canary's answer with stable's."""
        if self.recording:
            self.compared += 1
            self.agreed += int(agrees)

    # -- the walk ---------------------------------------------------------------------------

    def evaluate(self) -> Transition | None:
        """Judge the current step once its hold is over; None while it holds or waits for
        calls."""
        if self.phase is not Phase.PROGRESSING:
            return None
        step = self.steps[self.step]
        elapsed = self.clock() - self.started
        if step.hold_seconds is not None and elapsed < step.hold_seconds:
            return None
        if step.hold_requests is not None and self.canary.calls < step.hold_requests:
            return None
        reference, note = self.stable, ""
        if self.stable.calls < self.tolerances.min_samples and self.baseline is not None:
            index, reference = self.baseline
            note = f"; stable measured in step {index + 1}, as it serves too little here"
        verdict = compare(reference, self.canary, self.tolerances)
        figures = [f.as_dict() for f in verdict.figures]
        passed, reason = verdict.passed, verdict.reason + note
        if step.shadow and passed is not None:
            shadow = self._agreement_figure()
            figures.append(shadow.as_dict())
            if shadow.limit is None:
                passed, reason = None, f"waiting for shadow comparisons: {shadow.note}"
            elif not shadow.passed:
                why = (
                    f"agreement {shadow.canary:.4g} is below its limit {shadow.limit:.4g} "
                    f"({self.agreed} of {self.compared} shadow answers agree)"
                )
                reason = why if passed else f"{why}; {reason}"
                passed = False
        self.last_verdict = {"passed": passed, "reason": reason, "figures": figures}
        if passed is None:
            return None
        where = f"step {self.step + 1} of {len(self.steps)} ({self._describe(step)})"
        if not passed:
            return self._finish(Phase.ROLLED_BACK, "RolledBack", f"{where}: {reason}", figures)
        if self.stable.calls >= self.tolerances.min_samples:
            self.baseline = (self.step, self.stable)
        if self.step + 1 == len(self.steps):
            return self._finish(Phase.PROMOTED, "Promoted", f"{where} passed: {reason}", figures)
        passed_step = Transition("StepPassed", self.step + 1, step.percent, reason, figures)
        self.history.append(passed_step)
        self._start_step(self.step + 1)
        return passed_step

    def _agreement_figure(self) -> Figure:
        need = self.tolerances.min_samples
        limit = self.policy.shadow_comparison.min_agreement
        if self.compared < need:
            note = f"{self.compared} compared, needs {need}"
            return Figure("shadowAgreement", None, None, None, True, note)
        share = self.agreed / self.compared
        return Figure("shadowAgreement", None, share, limit, share >= limit)

    def _finish(
        self, phase: Phase, kind: str, reason: str, figures: list[dict[str, Any]]
    ) -> Transition:
        step = self.steps[self.step]
        self.phase, self.reason = phase, reason
        done = Transition(kind, self.step + 1, step.percent, reason, figures)
        self.history.append(done)
        return done

    def _start_step(self, index: int) -> None:
        self.step = index
        self.started = self.clock()
        self.stable = Window()
        self.canary = Window()
        self.compared = 0
        self.agreed = 0

    @staticmethod
    def _describe(step: RolloutStep) -> str:
        return f"{step.percent}% shadow" if step.shadow else f"{step.percent}%"

    # -- surviving a restart ------------------------------------------------------------------

    def saved(self) -> dict[str, Any]:
        """What a restarted router needs to go on where this one is: the versions and steps it
        is for, phase, step, reason, and the baseline stable window (a 100 % step is judged
        against it); :meth:`resume` reads it back."""
        out: dict[str, Any] = {
            "stableVersion": self.stable_version,
            "canaryVersion": self.canary_version,
            "stepPercents": [s.percent for s in self.steps],
            "phase": self.phase.value,
            "step": self.step + 1,
            "reason": self.reason,
            "history": [t.as_dict() for t in self.history],
        }
        if self.baseline is not None:
            index, window = self.baseline
            out["baseline"] = {
                "step": index + 1,
                "latenciesMs": list(window.latencies_ms),
                "failures": list(window.failures),
                "confidences": list(window.confidences),
            }
        return out

    def resume(self, saved: Mapping[str, Any]) -> bool:
        """Go on from a :meth:`saved` state: the step it reached (with fresh windows: its hold
        starts again), or its end. False, and nothing changed, when it is another rollout's
        (other versions or steps) or does not read as one."""
        mine = (self.stable_version, self.canary_version, [s.percent for s in self.steps])
        if (
            saved.get("stableVersion"),
            saved.get("canaryVersion"),
            saved.get("stepPercents"),
        ) != mine:
            return False
        try:
            phase = Phase(str(saved.get("phase")))
            step = int(saved["step"]) - 1
            baseline = saved.get("baseline")
            window = None
            if isinstance(baseline, Mapping):
                window = Window()
                window.latencies_ms.extend(float(v) for v in baseline["latenciesMs"])
                window.failures.extend(bool(v) for v in baseline["failures"])
                window.confidences.extend(float(v) for v in baseline["confidences"])
                base_step = int(baseline["step"]) - 1
            history = [
                Transition(str(t["type"]), int(t["step"]), int(t["percent"]), str(t["reason"]),
                           list(t["figures"]))
                for t in saved.get("history") or []
            ]  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return False
        if not 0 <= step < len(self.steps):
            return False
        self._start_step(step)
        self.phase, self.reason, self.history = phase, str(saved.get("reason") or ""), history
        self.baseline = (base_step, window) if window is not None else None
        return True

    # -- status -----------------------------------------------------------------------------

    @property
    def canary_share(self) -> int:
        """Percent of calls the canary serves now (0 in shadow steps and after a rollback)."""
        if self.phase is Phase.PROMOTED:
            return 100
        if self.phase is Phase.ROLLED_BACK or self.steps[self.step].shadow:
            return 0
        return self.steps[self.step].percent

    def snapshot(self) -> dict[str, Any]:
        """The rollout as status shows it: phase, step, share, the current windows, the last
        verdict and every transition so far."""
        step = self.steps[self.step]
        return {
            "module": self.module,
            "stableVersion": self.stable_version,
            "canaryVersion": self.canary_version,
            "phase": self.phase.value,
            "step": self.step + 1,
            "steps": len(self.steps),
            "stepPercent": step.percent,
            "shadow": step.shadow,
            "canaryShare": self.canary_share,
            "reason": self.reason,
            "stepSeconds": round(self.clock() - self.started, 3),
            "windows": {"stable": self.stable.summary(), "canary": self.canary.summary()},
            "shadowCompared": self.compared,
            "shadowAgreed": self.agreed,
            "lastVerdict": self.last_verdict,
            "history": [t.as_dict() for t in self.history],
        }
