"""The base every spec model shares: camelCase on the wire, snake_case in Python.

Unknown fields are refused (``extra="forbid"``), so a typo such as ``maxBatchsize`` is an error
naming the field rather than a silently ignored setting.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

API_GROUP = "modulemesh.io"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"


class SpecModel(BaseModel):
    """Base of every spec model: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The model as it is written in YAML/JSON: camelCase, unset optional fields omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ObjectMeta(BaseModel):
    """The part of Kubernetes ``metadata`` that ModuleMesh reads; the rest is kept as is."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    generation: int | None = None
    uid: str | None = None
