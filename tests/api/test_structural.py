"""The JSON-schema -> structural-schema conversion on small models of its own, so each rewrite
(refs, optionals, free dicts, discriminated unions, unsupported constructs) is pinned down apart
from whatever the spec models happen to use today.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import cel
import pytest
from pydantic import BaseModel, ConfigDict, Field

from modulemesh.api.structural import PRESERVE, VALIDATIONS, Rule, UnsupportedSchema, to_structural


class Inner(BaseModel):
    """An inner object."""

    model_config = ConfigDict(extra="forbid")

    size: Annotated[int, Field(ge=1)] = 4


class Cat(BaseModel):
    """A cat."""

    kind: Literal["cat"]
    name: str
    items: Annotated[list[str], Field(min_length=1, max_length=8)]
    lives: int = 9


class Dog(BaseModel):
    """A dog."""

    kind: Literal["dog"]
    name: str
    items: Annotated[list[str], Field(min_length=2, max_length=8)] = Field(default_factory=list)
    bark: str


Pet = Annotated[Cat | Dog, Field(discriminator="kind")]


class Owner(BaseModel):
    """The root."""

    inner: Inner | None = None
    ratio: Annotated[float, Field(gt=0)] = 1.0
    labels: dict[str, str] | None = None
    extra: dict[str, Any] | None = None
    pets: list[Pet] = Field(default_factory=list)


def _owner() -> dict[str, Any]:
    return to_structural(Owner.model_json_schema(by_alias=True, mode="validation"))


def _rules(schema: dict[str, Any]) -> dict[str, str]:
    return {r["rule"]: r["message"] for r in schema.get(VALIDATIONS, [])}


class TestPlainRewrites:
    def test_optional_ref_is_inlined_without_null_or_title(self) -> None:
        inner = _owner()["properties"]["inner"]
        assert inner == {
            "description": "An inner object.",
            "type": "object",
            "properties": {"size": {"type": "integer", "default": 4, "minimum": 1}},
        }

    def test_exclusive_minimum_becomes_openapi_v3_form(self) -> None:
        ratio = _owner()["properties"]["ratio"]
        assert ratio["minimum"] == 0 and ratio["exclusiveMinimum"] is True

    def test_string_map_keeps_its_value_schema(self) -> None:
        labels = _owner()["properties"]["labels"]
        assert labels == {"type": "object", "additionalProperties": {"type": "string"}}

    def test_free_dict_preserves_unknown_fields(self) -> None:
        assert _owner()["properties"]["extra"] == {"type": "object", PRESERVE: True}

    def test_no_defs_left(self) -> None:
        assert "$defs" not in _owner() and "$ref" not in repr(_owner())


class TestDiscriminatedUnion:
    def _pet(self) -> dict[str, Any]:
        pet: dict[str, Any] = _owner()["properties"]["pets"]["items"]
        return pet

    def test_one_object_with_a_tag_enum(self) -> None:
        pet = self._pet()
        assert pet["type"] == "object"
        assert pet["properties"]["kind"] == {"type": "string", "enum": ["cat", "dog"]}
        assert pet["required"] == ["kind", "name"]

    def test_variant_only_fields_are_forbidden_elsewhere_and_lose_defaults(self) -> None:
        pet = self._pet()
        assert "default" not in pet["properties"]["lives"]
        assert "Defaults to `9`" in pet["properties"]["lives"]["description"]
        assert _rules(pet)["!has(self.bark) || self.kind == 'dog'"] == (
            "bark is only allowed when kind is dog"
        )

    def test_the_one_declared_tag_default_stays(self) -> None:
        """A variant whose tag has a default (a missing tag means it) keeps the union's tag
        defaulted when the others have none, as a header classifier does beside content."""

        class Fish(BaseModel):
            kind: Literal["fish"] = "fish"
            fins: int = 2

        class Tank(BaseModel):
            pets: list[Annotated[Fish | Cat, Field(discriminator="kind")]]

        schema = to_structural(Tank.model_json_schema(mode="validation"))
        kind = schema["properties"]["pets"]["items"]["properties"]["kind"]
        assert kind == {"type": "string", "enum": ["fish", "cat"], "default": "fish"}
        assert "default" not in self._pet()["properties"]["kind"]

    def test_variant_required_fields_become_guarded_rules(self) -> None:
        rules = _rules(self._pet())
        assert rules["self.kind != 'cat' || has(self.items)"] == "kind cat needs items"
        assert rules["self.kind != 'dog' || has(self.bark)"] == "kind dog needs bark"

    def test_differing_bounds_take_the_loosest_plus_a_rule(self) -> None:
        pet = self._pet()
        assert pet["properties"]["items"]["minItems"] == 1
        assert "self.kind != 'dog' || !has(self.items) || self.items.size() >= 2" in _rules(pet)

    def test_every_generated_rule_compiles(self) -> None:
        for rule in _rules(self._pet()):
            cel.compile(rule)

    def test_variant_rules_are_guarded_by_the_tag(self) -> None:
        def rules_for(name: str) -> list[Rule]:
            return [Rule("self.bark != ''", "bark must not be empty")] if name == "Dog" else []

        schema = to_structural(Owner.model_json_schema(mode="validation"), rules_for)
        pet = schema["properties"]["pets"]["items"]
        assert "self.kind != 'dog' || !has(self.bark) || (self.bark != '')" in _rules(pet)


class TestUnsupported:
    def test_union_of_two_plain_types_is_refused(self) -> None:
        class Either(BaseModel):
            value: int | str

        with pytest.raises(UnsupportedSchema, match="anyOf"):
            to_structural(Either.model_json_schema())

    def test_union_without_discriminator_is_refused(self) -> None:
        class Loose(BaseModel):
            pet: Cat | Dog

        with pytest.raises(UnsupportedSchema):
            to_structural(Loose.model_json_schema())
