"""Status of a ``ModuleGraph``, following the Kubernetes API conventions.

Conditions are ``metav1.Condition``-shaped; the operator keeps ``lastTransitionTime`` when a
condition's status does not change.
"""

from __future__ import annotations

from typing import Annotated, Literal

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


class ModuleGraphStatus(SpecModel):
    """The ``status`` of a ``ModuleGraph``."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    endpoint: str | None = None
    modules: list[ModuleStatus] = Field(default_factory=list)
    modules_ready: str | None = Field(default=None, description="Ready/total modules, e.g. 2/3.")
    gpus: int | None = None


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
