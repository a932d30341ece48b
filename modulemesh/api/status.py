"""Status of a ``ModuleGraph``, following the Kubernetes API conventions.

Conditions are ``metav1.Condition``-shaped; the operator keeps ``lastTransitionTime`` when a
condition's status does not change.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from modulemesh.api.base import SpecModel

CONDITION_TYPES = (
    "Ready",
    "Validated",
    "Scheduled",
    "ModulesReady",
    "RouterReady",
    "Compliant",
    "Degraded",
)


class Condition(SpecModel):
    """A ``metav1.Condition``."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class EnvelopeSummary(SpecModel):
    """The part of a module's health envelope copied into the graph's status."""

    state: Literal["Healthy", "Degraded", "Unhealthy", "Unknown"] = "Unknown"
    reason: str = ""
    request_rate: float | None = None
    p99_ms: float | None = None
    error_rate: float | None = None
    confidence: float | None = None
    updated: str | None = Field(
        default=None, description="When the envelope was measured (RFC 3339)."
    )


class RolloutFigure(SpecModel):
    """One figure of a rollout step's judgement: both versions' values and the canary's
    limit (docs/operations.md, rolling out a model version)."""

    name: str
    stable: float | None = None
    canary: float | None = None
    limit: float | None = None
    passed: bool
    note: str | None = None


class RolloutStatus(SpecModel):
    """A module's canary rollout, as its router walks it."""

    phase: Literal["Progressing", "Promoted", "RolledBack"]
    step: int
    steps: int
    step_percent: int
    shadow: bool = False
    canary_share: int = Field(description="Percent of the module's calls the canary serves.")
    stable_version: str
    canary_version: str
    reason: str = Field(
        default="", description="Why it was promoted or rolled back, or why a step waits."
    )
    figures: list[RolloutFigure] = Field(
        default_factory=list, description="The latest judgement's figures."
    )


class ModuleStatus(SpecModel):
    """Per-module state a platform team acts on."""

    name: str
    desired_replicas: int = 0
    ready_replicas: int = 0
    gpus: int = Field(default=0, description="GPUs requested by all desired replicas.")
    provider: str | None = None
    unschedulable: str | None = Field(
        default=None, description="Why pods are not scheduled, e.g. Insufficient nvidia.com/gpu."
    )
    envelope: EnvelopeSummary | None = None
    rollout: RolloutStatus | None = Field(
        default=None, description="The module's canary rollout, while its router reports one."
    )


class Revision(SpecModel):
    """One spec the graph ran, kept in its history for ``modulemesh rollback``
    (docs/operations.md, rolling back)."""

    revision: int = Field(description="Grows by one with each new generation of the spec.")
    generation: int | None = None
    applied_at: str = Field(description="When the operator first reconciled it (RFC 3339).")
    outcome: Literal["Progressing", "Ready", "Failed", "Promoted", "RolledBack"] = Field(
        description="How it went: Ready, Failed (invalid spec), or a canary rollout's end."
    )
    spec: dict[str, Any] = Field(description="The graph's spec at that generation.")


class ModuleGraphStatus(SpecModel):
    """The ``status`` of a ``ModuleGraph``."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    endpoint: str | None = None
    modules: list[ModuleStatus] = Field(default_factory=list)
    modules_ready: str | None = Field(default=None, description="Ready/total modules, e.g. 2/3.")
    gpus: int | None = None
    rollout: str | None = Field(
        default=None,
        description="Each module's canary rollout in a few words, e.g. 'clf: Progressing 2/4 "
        "(20%)' (for `kubectl get mg`); absent without one.",
    )
    revisions: list[Revision] = Field(
        default_factory=list,
        description="The last 10 specs the graph ran, oldest first, with their outcome.",
    )


class BudgetWindow(SpecModel):
    """A differential privacy budget's current window, as the graphs' ledgers show it."""

    epsilon: float = Field(description="The budget per principal and window.")
    window_start: str | None = Field(default=None, description="RFC 3339.")
    reset_at: str | None = Field(default=None, description="When the window ends (RFC 3339).")
    principals: int = Field(default=0, description="Principals that spent in this window.")
    spent_epsilon: float = Field(default=0.0, description="Epsilon spent, all principals.")
    max_spent_epsilon: float = Field(
        default=0.0, description="The most epsilon any one principal spent."
    )


class PrivacyGateStatus(SpecModel):
    """The ``status`` of a ``PrivacyGate``."""

    observed_generation: int | None = None
    graphs: list[str] = Field(default_factory=list, description="Graphs that name this gate.")
    graph_count: int | None = Field(
        default=None, description="How many graphs name this gate (for `kubectl get pgate`)."
    )
    tags: str | None = Field(
        default=None,
        description="The gate's tag names, comma-separated (for `kubectl get pgate`: a "
        "printer column shows only the first value of a list).",
    )
    detector_hits: dict[str, int] | None = Field(
        default=None,
        description="Content detector matches by tag/detector, summed over the routers of the "
        "graphs naming the gate (each since it started).",
    )
    hits: int | None = Field(default=None, description="All detector matches (for kubectl).")
    redactions: int | None = Field(default=None, description="Spans redacted.")
    denials: int | None = Field(
        default=None, description="Requests or module calls the gate refused."
    )
    dp_answers: int | None = Field(
        default=None, description="Noisy answers paid from a principal's budget."
    )
    dp_refusals: int | None = Field(
        default=None, description="Answers refused because a budget would be exceeded (429)."
    )
    budget: BudgetWindow | None = None
    budget_used: str | None = Field(
        default=None,
        description="The most any principal spent of the budget in this window, e.g. "
        "0.75/1 (for kubectl).",
    )
    counted_at: str | None = Field(
        default=None, description="When the routers' counts last changed (RFC 3339)."
    )
