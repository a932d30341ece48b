"""``PrivacyGate``: data classes (compliance tags), how requests are classified into them,
where each class may be processed, and what happens on a violation."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

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


Classifier = Annotated[HeaderClassifier, Field(discriminator="type")]
"""How a request is classified into a tag. Only ``header`` today; detectors join this union."""


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


class PrivacyGateSpec(SpecModel):
    """The spec of a ``PrivacyGate``."""

    mode: GateMode = GateMode.ENFORCE
    tags: Annotated[list[GateTag], Field(min_length=1)]
    audit: AuditSettings = Field(default_factory=AuditSettings)


class PrivacyGate(SpecModel):
    """A ``PrivacyGate`` resource (``modulemesh.io/v1alpha1``)."""

    api_version: Literal["modulemesh.io/v1alpha1"] = GROUP_VERSION  # type: ignore[assignment]
    kind: Literal["PrivacyGate"] = "PrivacyGate"
    metadata: ObjectMeta
    spec: PrivacyGateSpec
