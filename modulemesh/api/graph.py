"""``ModuleGraph``: ONNX submodules, the routing policy that composes them, the gates that apply.

Field-level rules (ranges, patterns, exactly-one-of) live here, so they are also in the CRD
schema and refused at admission. Cross-field rules that need the whole graph (references,
cycles, reachability, the static privacy check) live in :mod:`modulemesh.api.validation`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from modulemesh.api.base import GROUP_VERSION, ObjectMeta, SpecModel
from modulemesh.api.gate import TAG_PATTERN

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$"
"""Module and node names become parts of Kubernetes object names (DNS-1123 labels)."""

GRAPH_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""A graph's name starts its Services' names, which must be DNS-1035 labels (no dots, a letter
first); longer names are cut and hashed to 63 characters by the operator."""

TENSOR_REF_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*\.[A-Za-z0-9_.:/-]+$"
"""``<source>.<tensor>``: ``request.input`` or ``<step>.<output>``."""

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=42)]
Tag = Annotated[str, Field(pattern=TAG_PATTERN)]
TensorRef = Annotated[str, Field(pattern=TENSOR_REF_PATTERN)]
HEADER_PATTERN = r"^[a-z0-9!#$%&'*+.^_`|~-]+$"
"""An HTTP header name (a token), lower-case as HTTP/2 and our servers see it."""
HeaderName = Annotated[str, Field(pattern=HEADER_PATTERN, max_length=128)]
CPU_PATTERN = r"^[0-9]+(\.[0-9]+)?m?$"
"""A Kubernetes CPU quantity: cores (``2``, ``0.5``) or millicores (``500m``)."""
MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$"
"""A Kubernetes memory quantity: bytes with an optional binary or decimal suffix."""
CpuQuantity = Annotated[str, Field(pattern=CPU_PATTERN)]
MemoryQuantity = Annotated[str, Field(pattern=MEMORY_PATTERN)]


# --- modules -------------------------------------------------------------------------------


class ConfigMapSource(SpecModel):
    """A model stored in a ConfigMap (``binaryData``), mounted into the runtime."""

    name: Annotated[str, Field(min_length=1)]
    key: Annotated[str, Field(min_length=1)]


class PvcSource(SpecModel):
    """A model on a PersistentVolumeClaim, mounted read-only into the runtime."""

    claim_name: Annotated[str, Field(min_length=1)]
    path: Annotated[str, Field(min_length=1, description="Path of the model inside the volume.")]


class ModelSource(SpecModel):
    """Where the module's ONNX model comes from: exactly one of ``path``, ``uri``,
    ``configMap``, ``pvc``. An ``https://`` URI must be pinned by ``sha256``."""

    path: str | None = Field(
        default=None,
        description="Local path. `modulemesh run` resolves a relative one against the graph "
        "file's directory; in a cluster it is a path inside the runtime image, a relative one "
        "under /opt/modulemesh/examples, where the runtime images ship the example models.",
    )
    uri: Annotated[str | None, Field(pattern=r"^(file|https)://.+", max_length=2048)] = None
    sha256: Annotated[str | None, Field(pattern=r"^[a-f0-9]{64}$")] = None
    config_map: ConfigMapSource | None = None
    pvc: PvcSource | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ModelSource:
        given = [n for n in ("path", "uri", "config_map", "pvc") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of path, uri, configMap, pvc"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.uri is not None and self.uri.startswith("https://") and self.sha256 is None:
            raise ValueError("an https:// uri must be pinned by sha256")
        return self


class Resources(SpecModel):
    """Compute for one module replica."""

    cpu: CpuQuantity = "500m"
    memory: MemoryQuantity = "512Mi"
    gpu: Annotated[int, Field(ge=0, le=16, strict=True)] = Field(
        default=0, description="Whole GPUs per replica."
    )
    gpu_resource: str | None = Field(
        default=None,
        description="Extended resource name for GPUs; the operator's default (nvidia.com/gpu) when unset.",
    )
    gpu_type: str | None = Field(
        default=None,
        description="GPU product to select, matched against the nvidia.com/gpu.product node label.",
    )
    sidecar_cpu: CpuQuantity | None = Field(
        default=None,
        description="CPU request of this module's sidecar; the operator's default (the "
        "chart's sidecar.resources) when unset. The sidecar costs about 35-120 us of CPU per "
        "request (docs/operations.md, sizing the sidecar).",
    )


class Batching(SpecModel):
    """Dynamic batching in the runtime."""

    max_batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    max_delay_ms: Annotated[float, Field(ge=0, le=10_000)] = Field(
        default=1.0,
        description="Upper bound of how long a batch may wait for more requests once the model "
        "is free (with adaptive, the default, the runtime waits only while the arrival rate it "
        "measures says more rows will come within it, so a lone request never waits); with "
        "adaptive false every batch that is not full waits this long. 0: never wait, a batch "
        "runs at once with whatever queued while the model was busy.",
    )
    adaptive: bool = Field(
        default=True,
        description="Choose each wait from the measured arrival rate and model latency, within "
        "maxDelayMs (docs/architecture.md, adaptive batching); false: a fixed maxDelayMs wait.",
    )
    max_queue: Annotated[int, Field(ge=1, le=100_000)] = 256


class HealthThresholds(SpecModel):
    """When the sidecar calls the module Degraded or Unhealthy.

    ``degradedP50Ms``, ``degradedP95Ms`` and ``degradedP99Ms`` are the module's latency
    objectives: when that percentile of its rolling window (60 s) is above the objective, its
    envelope turns Degraded with a reason naming the percentile and both numbers.
    """

    degraded_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.05
    unhealthy_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.5
    degraded_p50_ms: Annotated[float | None, Field(gt=0)] = Field(
        default=None, description="Latency objective: Degraded while the window's p50 is above."
    )
    degraded_p95_ms: Annotated[float | None, Field(gt=0)] = Field(
        default=None, description="Latency objective: Degraded while the window's p95 is above."
    )
    degraded_p99_ms: Annotated[float | None, Field(gt=0)] = Field(
        default=None, description="Latency objective: Degraded while the window's p99 is above."
    )
    min_confidence: Annotated[float | None, Field(ge=0, le=1)] = None


class CpuFallback(StrEnum):
    """What a GPU module does when its runtime can get only onnxruntime's CPU provider."""

    ALLOW = "Allow"
    REFUSE = "Refuse"


class RolloutStep(SpecModel):
    """One step of a rollout: a share of the module's traffic served by the canary (or, with
    ``shadow``, copied to it and not served), held for a time and/or a number of canary calls,
    then judged against stable over the same window."""

    percent: Annotated[int, Field(ge=1, le=100, strict=True)] = Field(
        description="Share of the module's calls the canary serves (shadow: receives a copy of)."
    )
    shadow: bool = Field(
        default=False,
        description="Mirror the share to the canary without serving its answers, and compare "
        "its outputs with stable's (rollout.shadowComparison).",
    )
    hold_seconds: Annotated[float | None, Field(gt=0, le=86_400)] = Field(
        default=None, description="Hold the step at least this long before judging it."
    )
    hold_requests: Annotated[int | None, Field(ge=1, le=10_000_000, strict=True)] = Field(
        default=None, description="Hold the step until the canary has had this many calls."
    )

    @model_validator(mode="after")
    def _held(self) -> RolloutStep:
        if self.hold_seconds is None and self.hold_requests is None:
            raise ValueError("a rollout step needs holdSeconds, holdRequests or both")
        return self


class RolloutTolerances(SpecModel):
    """How much worse than stable the canary may be at a step and still pass it."""

    max_error_rate_increase: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.01, description="Canary error rate minus stable's (absolute)."
    )
    max_p99_ratio: Annotated[float, Field(ge=1, le=100)] = Field(
        default=1.5,
        description="The canary's p99 latency may be up to stable's p99 times this plus "
        "latencyGraceMs.",
    )
    latency_grace_ms: Annotated[float, Field(ge=0, le=60_000)] = Field(
        default=5.0,
        description="Milliseconds added to the p99 limit, so scheduling noise on a fast module "
        "does not fail it.",
    )
    max_confidence_drop: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.05, description="Stable's mean confidence minus the canary's."
    )
    max_confidence_psi: Annotated[float, Field(gt=0, le=100)] = Field(
        default=0.2,
        description="Population stability index of the canary's confidences against stable's.",
    )
    max_confidence_ks: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.3,
        description="Two-sample Kolmogorov-Smirnov statistic of the two versions' confidences.",
    )
    min_samples: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] = Field(
        default=100,
        description="Calls each version needs in a step's window before it is judged; with "
        "fewer, two windows of one version fail the default tolerances by chance (1 step in 5 "
        "at 20 calls).",
    )


class Agreement(StrEnum):
    """How a shadow step decides that the canary's answer agrees with stable's."""

    ARGMAX = "argmax"
    VALUES = "values"


class ShadowComparison(SpecModel):
    """How shadow steps compare the canary's outputs with stable's."""

    agreement: Agreement = Field(
        default=Agreement.ARGMAX,
        description="argmax: every output's per-row argmax is the same; values: every value "
        "within atol.",
    )
    atol: Annotated[float, Field(ge=0, le=1e6)] = Field(
        default=1e-4, description="Largest absolute difference that agrees (values)."
    )
    min_agreement: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.99, description="Share of compared answers that must agree to pass the step."
    )


def _default_steps() -> list[RolloutStep]:
    return [RolloutStep(percent=p, hold_seconds=60.0) for p in (5, 25, 50, 100)]


class RolloutPolicy(SpecModel):
    """How a module's canary takes over: steps, holds and tolerances. Shadow steps come first;
    the traffic steps' percents rise; passing the last step promotes the canary, failing any
    rolls back to stable with the reason."""

    steps: Annotated[list[RolloutStep], Field(min_length=1, max_length=20)] = Field(
        default_factory=_default_steps,
        description="In order; default 5, 25, 50, 100 percent, 60 s each.",
    )
    tolerances: RolloutTolerances = Field(default_factory=RolloutTolerances)
    shadow_comparison: ShadowComparison = Field(default_factory=ShadowComparison)

    @model_validator(mode="after")
    def _ordered(self) -> RolloutPolicy:
        seen_traffic = False
        last = 0
        for i, step in enumerate(self.steps):
            if step.shadow:
                if seen_traffic:
                    raise ValueError(
                        f"steps[{i}] is a shadow step after a traffic step; shadow steps come "
                        "first (a canary already serving has nothing left to shadow)"
                    )
                continue
            if step.percent <= last:
                raise ValueError(
                    f"steps[{i}].percent {step.percent} must be above the previous traffic "
                    f"step's {last}: traffic steps rise"
                )
            seen_traffic, last = True, step.percent
        return self


class Canary(SpecModel):
    """A new version of the module's model, rolled out beside the current one by the module's
    rollout policy."""

    model: ModelSource
    version: Annotated[str, Field(min_length=1, max_length=63)]


class Module(SpecModel):
    """One ONNX submodule: a Deployment of runtime + sidecar pods and a Service."""

    name: Name
    model: ModelSource
    version: Annotated[str, Field(min_length=1, max_length=63)] = "1"
    resources: Resources = Field(default_factory=Resources)
    cpu_fallback: CpuFallback = Field(
        default=CpuFallback.ALLOW,
        description="For a module with resources.gpu > 0 whose runtime gets only the CPU "
        "provider (no usable CUDA on its node or in its image): Allow serves on the CPU and the "
        "graph's Degraded condition says so (GPUFallbackToCPU); Refuse keeps the module not "
        "ready, its readiness and log saying why. No effect without GPUs.",
    )
    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    batching: Batching = Field(default_factory=Batching)
    clearance: list[Tag] = Field(
        default_factory=list, description="Compliance tags this module may receive."
    )
    region: str | None = Field(default=None, description="Region the module must run in.")
    cost: Annotated[float, Field(ge=0)] = Field(
        default=1.0, description="Relative cost of one call, for cascade and select."
    )
    timeout_ms: Annotated[int | None, Field(ge=1, le=600_000)] = None
    fallback: Name | None = Field(
        default=None,
        description="Module used when this one is not cleared, ejected, failing, or in a state "
        "the graph's policy.fallbackOn lists (Unhealthy by default).",
    )
    confidence_output: str | None = Field(
        default=None, description="Output whose max is the confidence; auto-detected when unset."
    )
    health: HealthThresholds = Field(default_factory=HealthThresholds)
    canary: Canary | None = Field(
        default=None,
        description="A new model version to roll out beside this one by rollout's steps "
        "(docs/operations.md, rolling out a model version).",
    )
    rollout: RolloutPolicy | None = Field(
        default=None, description="How a canary takes over; the defaults when unset."
    )
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _canary_differs(self) -> Module:
        if (
            self.canary is not None
            and self.canary.version == self.version
            and self.canary.model == self.model
        ):
            raise ValueError(
                f"canary has the module's own model and version {self.version!r}: nothing to "
                "roll out; give the canary the new model or version"
            )
        return self

    @property
    def rollout_policy(self) -> RolloutPolicy:
        """The declared rollout policy, or the defaults."""
        return self.rollout if self.rollout is not None else RolloutPolicy()


# --- routing -------------------------------------------------------------------------------


class Target(SpecModel):
    """What a step calls: exactly one of a ``module`` or another routing ``node``."""

    module: Name | None = None
    node: Name | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        if (self.module is None) == (self.node is None):
            raise ValueError("set exactly one of module, node")
        return self

    @property
    def ref(self) -> str:
        """``module:<name>`` or ``node:<name>``, for messages and explain output."""
        return f"module:{self.module}" if self.module is not None else f"node:{self.node}"


class Step(Target):
    """A call within a node, with explicit tensor mapping.

    ``inputs`` maps the target's input names to ``<source>.<tensor>`` where source is
    ``request`` or the name of an earlier step; unset, the previous step's outputs (or the
    request's inputs, for the first step) pass through by name.
    """

    name: Name | None = Field(default=None, description="Step name; defaults to the target's.")
    inputs: dict[str, TensorRef] | None = None
    soft: bool = Field(
        default=False, description="In an ensemble: a failing soft step is left out, not fatal."
    )

    @property
    def step_name(self) -> str:
        """The name later steps and mappings refer to."""
        if self.name is not None:
            return self.name
        return self.module if self.module is not None else str(self.node)


class SequenceNode(SpecModel):
    """Steps in order; each step sees the previous output."""

    type: Literal["sequence"]
    name: Name
    steps: Annotated[list[Step], Field(min_length=1, max_length=32)]
    outputs: dict[str, TensorRef] | None = Field(
        default=None, description="Graph outputs as `<step>.<tensor>`; the last step's when unset."
    )


class MergeStrategy(StrEnum):
    """How an ensemble combines its steps' outputs."""

    MEAN = "mean"
    VOTE = "vote"
    CONCAT = "concat"
    FIRST = "first"
    KEYED = "keyed"


class EnsembleNode(SpecModel):
    """Steps in parallel, merged; siblings are cancelled when a hard step fails."""

    type: Literal["ensemble"]
    name: Name
    steps: Annotated[list[Step], Field(min_length=2, max_length=32)]
    merge: MergeStrategy = MergeStrategy.MEAN
    min_successes: Annotated[int, Field(ge=1)] = 1


class SwitchCase(Target):
    """A case: its ``when`` CEL condition over ``request`` selects the target."""

    when: Annotated[str, Field(min_length=1)]


class NoMatch(StrEnum):
    """What a switch does when no case holds and there is no default."""

    REJECT = "reject"


class SwitchNode(SpecModel):
    """First case whose condition holds, else ``default``; never a silent 404."""

    type: Literal["switch"]
    name: Name
    cases: Annotated[list[SwitchCase], Field(min_length=1, max_length=32)]
    default: Target | None = None
    on_no_match: NoMatch | None = Field(
        default=None,
        description="Required without a default: `reject` answers 422 naming the switch.",
    )


class WeightedTarget(Target):
    """A split arm with its share of traffic in percent."""

    weight: Annotated[int, Field(ge=0, le=100)]


class Mirror(Target):
    """A share of traffic copied to a target whose result is discarded."""

    percent: Annotated[float, Field(gt=0, le=100)]


class SplitNode(SpecModel):
    """Weighted targets for canary / A-B, optionally sticky by a header."""

    type: Literal["split"]
    name: Name
    targets: Annotated[list[WeightedTarget], Field(min_length=1, max_length=32)]
    sticky_header: str | None = Field(
        default=None, description="Requests with the same value of this header take the same arm."
    )
    mirror: Mirror | None = None


class CascadeNode(SpecModel):
    """Cheapest candidate first; escalate while ``escalateWhen`` (CEL over ``output``) holds."""

    type: Literal["cascade"]
    name: Name
    candidates: Annotated[list[Step], Field(min_length=2, max_length=32)]
    escalate_when: Annotated[str, Field(min_length=1)] = "output.confidence < 0.8"


class SelectWeights(SpecModel):
    """Weights of the score a ``select`` node minimises."""

    latency: Annotated[float, Field(ge=0)] = 1.0
    cost: Annotated[float, Field(ge=0)] = 1.0
    error_rate: Annotated[float, Field(ge=0)] = 10.0


class Percentile(StrEnum):
    """A latency percentile of a module's envelope."""

    P50 = "p50"
    P95 = "p95"
    P99 = "p99"


class SelectBudget(SpecModel):
    """Candidates outside the budget are not chosen while one inside it exists."""

    max_latency_ms: Annotated[float | None, Field(gt=0)] = Field(
        default=None,
        description="Most latency, at latencyPercentile of the candidate's envelope, that "
        "stays within the budget.",
    )
    latency_percentile: Percentile = Field(
        default=Percentile.P99,
        description="Which percentile maxLatencyMs bounds: p99 (the default; a budget is a "
        "promise about the slow requests too), p95 or p50.",
    )
    max_cost: Annotated[float | None, Field(ge=0)] = None
    max_error_rate: Annotated[float | None, Field(ge=0, le=1)] = None


class SelectNode(SpecModel):
    """Pick among candidates by their live envelopes: weighted latency, cost, error rate."""

    type: Literal["select"]
    name: Name
    candidates: Annotated[list[Step], Field(min_length=1, max_length=32)]
    weights: SelectWeights = Field(default_factory=SelectWeights)
    budget: SelectBudget = Field(default_factory=SelectBudget)
    stale_after_seconds: Annotated[float, Field(gt=0)] = 30.0


class Exhausted(StrEnum):
    """What a validate node does once ``maxAttempts`` is used up."""

    REJECT = "reject"
    RETURN_LAST = "returnLast"
    FALLBACK = "fallback"


class ValidateNode(SpecModel):
    """generate -> validator -> corrector, up to ``maxAttempts``, then ``onExhausted``."""

    type: Literal["validate"]
    name: Name
    generator: Step
    validator: Step
    corrector: Step | None = None
    accept_when: Annotated[str, Field(min_length=1)] = Field(
        description="CEL over the validator's `output`; the generated result is accepted when true."
    )
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    on_exhausted: Exhausted = Exhausted.REJECT
    fallback: Target | None = Field(default=None, description="Used when onExhausted is fallback.")

    @model_validator(mode="after")
    def _fallback_given(self) -> ValidateNode:
        if self.on_exhausted is Exhausted.FALLBACK and self.fallback is None:
            raise ValueError("onExhausted: fallback needs a fallback target")
        return self


Node = Annotated[
    SequenceNode | EnsembleNode | SwitchNode | SplitNode | CascadeNode | SelectNode | ValidateNode,
    Field(discriminator="type"),
]
NODE_TYPES = ("sequence", "ensemble", "switch", "split", "cascade", "select", "validate")


class Routing(SpecModel):
    """The routing tree: named nodes and the one a request enters."""

    entry: Name
    nodes: Annotated[list[Node], Field(min_length=1, max_length=64)]

    def node(self, name: str) -> Node | None:
        """The node called ``name``, or None."""
        return next((n for n in self.nodes if n.name == name), None)


# --- policy --------------------------------------------------------------------------------


class Priority(StrEnum):
    """Request priority classes; under saturation the lowest is shed first."""

    CRITICAL = "critical"
    STANDARD = "standard"
    SHEDDABLE = "sheddable"


class RetryPolicy(SpecModel):
    """Retries of retryable failures, limited by a budget relative to traffic."""

    attempts: Annotated[int, Field(ge=0, le=10)] = 2
    budget_percent: Annotated[float, Field(ge=0, le=100)] = 20.0
    backoff_ms: Annotated[float, Field(ge=0, le=60_000)] = 10.0


class CircuitBreakerPolicy(SpecModel):
    """Outlier ejection: consecutive failures eject a module for a growing, capped time."""

    consecutive_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    base_ejection_ms: Annotated[int, Field(ge=1, le=3_600_000)] = 1000
    max_ejection_ms: Annotated[int, Field(ge=1, le=3_600_000)] = 30_000


class SheddingPolicy(SpecModel):
    """Load shedding: beyond these many in-flight requests, lower priorities get 429."""

    max_in_flight: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    default_priority: Priority = Priority.STANDARD


class CachePolicy(SpecModel):
    """An LRU + TTL result cache keyed by module, version and input bytes."""

    enabled: bool = False
    max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 1024
    ttl_seconds: Annotated[float, Field(gt=0)] = 60.0


class FallbackState(StrEnum):
    """An envelope state in which a module with a ``fallback`` is passed over for it."""

    UNHEALTHY = "Unhealthy"
    DEGRADED = "Degraded"


class GraphPolicy(SpecModel):
    """Defaults for every call the router makes."""

    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] = 5000
    call_timeout_ms: Annotated[int, Field(ge=1, le=600_000)] = 2000
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    circuit_breaker: CircuitBreakerPolicy = Field(default_factory=CircuitBreakerPolicy)
    shedding: SheddingPolicy = Field(default_factory=SheddingPolicy)
    cache: CachePolicy = Field(default_factory=CachePolicy)
    propagate_headers: list[HeaderName] = Field(
        default_factory=list,
        max_length=32,
        description="Client request headers (lower-case names, e.g. x-request-id) passed on "
        "to every module call of this graph; hop-by-hop headers and x-modulemesh-* cannot be "
        "listed.",
    )
    envelope_stale_after_seconds: Annotated[float, Field(ge=5, le=3600)] = Field(
        default=30.0,
        description="Seconds after which a module's latest health envelope (by its own "
        "timestamp) no longer counts: the module's health is Unknown for health-aware "
        "fallback and in GET /envelopes and the graph's status. At least 5: the router polls "
        "idle modules every 2 s. A select node's staleAfterSeconds sets its own bound.",
    )
    fallback_on: Annotated[list[FallbackState], Field(min_length=1, max_length=2)] = Field(
        default_factory=lambda: [FallbackState.UNHEALTHY],
        description="Envelope states in which a module that declares a fallback is passed "
        "over for it before being called: [Unhealthy] (the default), or [Unhealthy, Degraded] "
        "to also leave a Degraded module (e.g. one breaking its latency objective) while it "
        "is Degraded. Unhealthy must be listed.",
    )

    @model_validator(mode="after")
    def _fallback_on_unhealthy(self) -> GraphPolicy:
        if FallbackState.UNHEALTHY not in self.fallback_on:
            raise ValueError(
                "fallbackOn must list Unhealthy (an Unhealthy module always falls back)"
            )
        if len(set(self.fallback_on)) != len(self.fallback_on):
            raise ValueError("fallbackOn lists a state twice")
        return self


class RouterSettings(SpecModel):
    """The graph's router Deployment."""

    replicas: Annotated[int, Field(ge=0, le=100)] = Field(
        default=1, description="Router replicas behind the graph's Service."
    )
    cpu: CpuQuantity = Field(
        default="500m",
        description="CPU request and limit of each replica. The router of a 1-step graph "
        "costs about 70 us of CPU per request (docs/benchmarks.md; more steps cost more), so "
        "500m serves about 7000 requests per second; raise cpu or replicas for more.",
    )
    memory: MemoryQuantity = Field(
        default="256Mi", description="Memory request and limit of each replica."
    )


class CapturePolicy(SpecModel):
    """A bounded sample of the graph's requests and answers, for ``modulemesh replay``. A
    tagged request is captured only when every gate defining each of its tags marks the tag
    ``capturable`` (a tag no gate defines, never)."""

    rate: Annotated[float, Field(gt=0, le=1)] = Field(
        description="Share of requests captured, chosen by a hash of the trace id (the same "
        "trace id is always in or out)."
    )
    path: Annotated[str, Field(min_length=1, max_length=4096)] = Field(
        default="capture.jsonl",
        description="JSON-lines file the router appends to; {hostname} in it becomes the "
        "router's host (pod) name, one file per replica. Relative: modulemesh run resolves it "
        "against the graph file's directory, a cluster against claimName's volume (or the "
        "router pod's /tmp, lost with the pod, without one).",
    )
    claim_name: Annotated[
        str | None,
        Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253),
    ] = Field(
        default=None,
        description="A PersistentVolumeClaim (the graph's namespace) mounted into the router "
        "pods at /var/lib/modulemesh/capture, where a relative path is written.",
    )
    max_requests: Annotated[int, Field(ge=1, le=10_000_000, strict=True)] = Field(
        default=1000, description="Records written at most; then capturing stops."
    )
    max_bytes: Annotated[int, Field(ge=1024, le=1 << 34, strict=True)] = Field(
        default=64 << 20, description="Size the file may reach at most; then capturing stops."
    )
    max_record_bytes: Annotated[int, Field(ge=256, le=64 << 20, strict=True)] = Field(
        default=1 << 20, description="A larger request and answer are not captured (counted)."
    )


class ModuleGraphSpec(SpecModel):
    """The spec of a ``ModuleGraph``."""

    modules: Annotated[list[Module], Field(min_length=1, max_length=64)]
    routing: Routing
    gates: list[Name] = Field(
        default_factory=list, description="PrivacyGates (same namespace) that apply."
    )
    policy: GraphPolicy = Field(default_factory=GraphPolicy)
    router: RouterSettings = Field(default_factory=RouterSettings)
    capture: CapturePolicy | None = Field(
        default=None,
        description="Capture a sample of requests and answers for modulemesh replay "
        "(docs/operations.md, capture and replay); none when unset.",
    )

    @model_validator(mode="after")
    def _canary_names_free(self) -> ModuleGraphSpec:
        names = {m.name for m in self.modules}
        for m in self.modules:
            if m.canary is not None and f"{m.name}-canary" in names:
                raise ValueError(
                    f"module {m.name!r} has a canary, whose Deployment and Service are named "
                    f"like those of module '{m.name}-canary'; rename that module"
                )
        return self

    def module(self, name: str) -> Module | None:
        """The module called ``name``, or None."""
        return next((m for m in self.modules if m.name == name), None)


class ModuleGraph(SpecModel):
    """A ``ModuleGraph`` resource (``modulemesh.io/v1alpha1``)."""

    api_version: Literal["modulemesh.io/v1alpha1"] = GROUP_VERSION  # type: ignore[assignment]
    kind: Literal["ModuleGraph"] = "ModuleGraph"
    metadata: ObjectMeta
    spec: ModuleGraphSpec
    status: dict[str, Any] | None = None
