"""``PrivacyGate``: data classes (compliance tags), how requests are classified into them,
where each class may be processed, and what happens on a violation."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from modulemesh.api.base import GROUP_VERSION, ObjectMeta, SpecModel

TAG_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
"""Tags are lower-case identifiers, so headers, clearance lists and gates compare exactly."""


class GateMode(StrEnum):
    """``enforce`` denies violations; ``dryrun`` only records them."""

    ENFORCE = "enforce"
    DRYRUN = "dryrun"


ClassifierValue = Annotated[str, Field(min_length=1, max_length=256, pattern=r'^[^",\\]+$')]
"""One value of a header classifier: a single list item, so no comma, quote or backslash."""


class HeaderClassifier(SpecModel):
    """Tags a request when a header is present (and, if ``values`` is set, has one of them)."""

    type: Literal["header"] = "header"
    header: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9-]+$")]
    values: list[ClassifierValue] | None = Field(
        default=None,
        description="Header values that select this tag (case-insensitive, matched item by "
        "item over the header's comma-separated list, so no comma, quote or backslash); "
        "any value when unset.",
    )


class DetectorKind(StrEnum):
    """Content detectors (:mod:`modulemesh.privacy.detectors`): built-in kinds and ``regex``."""

    EMAIL = "email"
    PHONE = "phone"
    PAYMENT_CARD = "payment-card"
    IBAN = "iban"
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    NATIONAL_ID = "national-id"
    REGEX = "regex"


NationalIdFormat = Literal["us-ssn", "nl-bsn", "de-idnr", "es-dni", "it-codice-fiscale"]
"""The national ID formats a ``national-id`` detector can name."""


class ContentClassifier(SpecModel):
    """Tags a request when a detector finds its kind of data in the request's text (BYTES
    input tensors and string request parameters), whatever its headers say."""

    type: Literal["content"]
    detector: DetectorKind = Field(
        description="What to look for: email, phone, payment-card (Luhn-checked), iban "
        "(checksum-checked), ipv4, ipv6, national-id (see format) or regex (see pattern)."
    )
    format: NationalIdFormat | None = Field(
        default=None, description="The national ID format of a national-id detector."
    )
    name: Annotated[str, Field(pattern=TAG_PATTERN)] | None = Field(
        default=None,
        description="Name of a regex detector: errors, explain output and audit records say "
        "regex:<name>, and redaction writes <NAME>.",
    )
    pattern: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        default=None,
        description="RE2 syntax (linear time: no backreferences or lookaround), for a regex "
        "detector; must not match the empty string.",
    )

    @model_validator(mode="after")
    def _fields_fit_detector(self) -> ContentClassifier:
        """Each detector takes exactly the fields it uses; a regex must compile under RE2."""
        regex = self.detector is DetectorKind.REGEX
        if regex and (self.pattern is None or self.name is None):
            raise ValueError("a regex detector needs both name and pattern")
        if not regex and (self.pattern is not None or self.name is not None):
            raise ValueError(f"name and pattern are for regex detectors, not {self.detector}")
        national = self.detector is DetectorKind.NATIONAL_ID
        if national != (self.format is not None):
            raise ValueError("format is required by, and only for, a national-id detector")
        if self.pattern is not None:
            from modulemesh.privacy.detectors import compile_pattern

            compile_pattern(self.pattern)
        return self


Classifier = Annotated[HeaderClassifier | ContentClassifier, Field(discriminator="type")]
"""How a request is classified into a tag: by a header, or by what its text contains."""

CLASSIFIER_TYPES = ("header", "content")
"""The ``type`` values of :data:`Classifier`, as error messages list them."""


class TagAction(StrEnum):
    """What a content detector's hit does to the request (declared tags only ever route)."""

    TAG = "tag"
    DENY = "deny"
    REDACT = "redact"


class GateTag(SpecModel):
    """One data class: how requests are classified into it and where it may be processed."""

    name: Annotated[str, Field(pattern=TAG_PATTERN)]
    description: str | None = None
    classifiers: list[Classifier] = Field(
        default_factory=list,
        description="Ways a request gets this tag, besides naming it in x-modulemesh-tags.",
    )
    allowed_regions: list[str] | None = Field(
        default=None,
        description="Regions where requests with this tag may be processed; any region when unset.",
    )
    cacheable: bool = Field(
        default=False,
        description="Whether router results for requests with this tag may be cached.",
    )
    capturable: bool = Field(
        default=False,
        description="Whether requests with this tag (and their answers) may be written to a "
        "graph's capture file (spec.capture); never when unset.",
    )
    action: TagAction = Field(
        default=TagAction.TAG,
        description="What a content classifier's hit does: tag (the request gets this tag and "
        "is routed by clearance), deny (403 naming the tag and detector, never the text) or "
        "redact (the matched text is replaced by a placeholder such as <EMAIL> before any "
        "module sees it; the tag is not added). In dryrun mode deny and redact are only "
        "recorded and the tag is added.",
    )

    @field_validator("classifiers", mode="before")
    @classmethod
    def _default_classifier_type(cls, value: Any) -> Any:
        """A classifier without ``type`` is a header classifier, as the CRD's default says."""
        if isinstance(value, list):
            return [
                {"type": "header", **item}
                if isinstance(item, dict) and "type" not in item
                else item
                for item in value
            ]
        return value


class AuditSettings(SpecModel):
    """What is recorded for each privacy decision (never the payload)."""

    log_allowed: bool = Field(
        default=False, description="Also record allowed decisions, not only denials."
    )


class Mechanism(StrEnum):
    """How noise is drawn for a differentially private output (OpenDP's samplers)."""

    LAPLACE = "laplace"
    GAUSSIAN = "gaussian"


PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Delta = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]


class DpOutput(SpecModel):
    """One module output that leaves the mesh only with calibrated noise."""

    module: Annotated[str, Field(min_length=1, max_length=63)] = Field(
        description="The module whose answer is noised (in each graph naming the gate that has "
        "a module of this name)."
    )
    output: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None,
        description="The output tensor to noise; every output of the module when unset (all "
        "must then be numeric).",
    )
    mechanism: Mechanism = Field(
        description="laplace (pure epsilon-DP, noise scale sensitivity/epsilon) or gaussian "
        "((epsilon, delta)-DP, scale calibrated by OpenDP)."
    )
    sensitivity: PositiveFinite = Field(
        description="How much one person's data can change the output tensor as a whole: its "
        "L1 norm for laplace, its L2 norm for gaussian. Declared by the graph's author; the "
        "guarantee holds only if it is true."
    )
    epsilon: PositiveFinite = Field(description="Privacy loss epsilon spent per answer.")
    delta: Delta | None = Field(
        default=None, description="Privacy loss delta spent per answer (gaussian only)."
    )

    @model_validator(mode="after")
    def _delta_fits_mechanism(self) -> DpOutput:
        """Gaussian noise needs a delta; Laplace noise is pure epsilon-DP and takes none."""
        gaussian = self.mechanism is Mechanism.GAUSSIAN
        if gaussian and self.delta is None:
            raise ValueError("a gaussian output needs delta (0 < delta < 1)")
        if not gaussian and self.delta is not None:
            raise ValueError("delta is for gaussian outputs; laplace noise is pure epsilon-DP")
        return self


class Principal(SpecModel):
    """Who pays for an answer: the header naming the caller (set by an authenticating proxy
    in front of the router, which must strip it from clients)."""

    header: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9-]+$")]


class PrivacyBudget(SpecModel):
    """The privacy loss one principal may accumulate per window, across every router replica."""

    epsilon: PositiveFinite
    delta: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0
    window_seconds: Annotated[int, Field(ge=1, le=366 * 86400)] = Field(
        default=86400,
        description="Length of the budget window; windows are aligned to the Unix epoch and "
        "the budget resets at the start of each.",
    )


class DifferentialPrivacy(SpecModel):
    """Noise on module outputs under a per-principal privacy budget."""

    principal: Principal
    budget: PrivacyBudget
    outputs: Annotated[list[DpOutput], Field(min_length=1)]

    @model_validator(mode="after")
    def _outputs_fit_budget(self) -> DifferentialPrivacy:
        """Each answer fits the budget, and no output is declared twice."""
        seen: set[tuple[str, str | None]] = set()
        for i, out in enumerate(self.outputs):
            key = (out.module, out.output)
            if (
                key in seen
                or (out.module, None) in seen
                or (out.output is None and any(m == out.module for m, _ in seen))
            ):
                raise ValueError(
                    f"outputs[{i}]: module {out.module!r} output "
                    f"{out.output or '(all)'!r} is declared more than once"
                )
            seen.add(key)
        by_module: dict[str, tuple[float, float]] = {}
        for out in self.outputs:
            eps, delta = by_module.get(out.module, (0.0, 0.0))
            by_module[out.module] = (eps + out.epsilon, delta + (out.delta or 0.0))
        for module, (eps, delta) in sorted(by_module.items()):
            if eps > self.budget.epsilon or delta > self.budget.delta:
                raise ValueError(
                    f"one answer of module {module!r} costs epsilon {eps:g}, delta {delta:g}, "
                    f"more than the whole budget (epsilon {self.budget.epsilon:g}, delta "
                    f"{self.budget.delta:g}): no request could be answered"
                )
        return self


class PrivacyGateSpec(SpecModel):
    """The spec of a ``PrivacyGate``."""

    mode: GateMode = GateMode.ENFORCE
    tags: list[GateTag] = Field(default_factory=list)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    differential_privacy: DifferentialPrivacy | None = Field(
        default=None,
        description="Module outputs that leave the mesh only with calibrated noise, paid for "
        "from a privacy budget per principal and window (enforced in every mode).",
    )

    @model_validator(mode="after")
    def _not_empty(self) -> PrivacyGateSpec:
        """A gate declares tags, differential privacy or both: an empty one is a mistake."""
        if not self.tags and self.differential_privacy is None:
            raise ValueError("a gate needs tags, differentialPrivacy or both")
        return self


class PrivacyGate(SpecModel):
    """A ``PrivacyGate`` resource (``modulemesh.io/v1alpha1``)."""

    api_version: Literal["modulemesh.io/v1alpha1"] = GROUP_VERSION  # type: ignore[assignment]
    kind: Literal["PrivacyGate"] = "PrivacyGate"
    metadata: ObjectMeta
    spec: PrivacyGateSpec
