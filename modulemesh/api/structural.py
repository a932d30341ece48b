"""Turn a pydantic JSON schema into a Kubernetes *structural* schema.

The API server only accepts CRD schemas it can prune and default by: every node typed, no
``$ref``, no ``anyOf``/``oneOf`` standing in for a type, no ``const``, no ``additionalProperties``
next to ``properties``. pydantic emits all of those, so this module rewrites them: refs are
inlined, ``X | None`` becomes ``X`` (an absent field is how Kubernetes spells "unset"),
discriminated unions become one object whose per-variant rules are CEL
``x-kubernetes-validations``, and free-form dicts keep their content with
``x-kubernetes-preserve-unknown-fields``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Schema = dict[str, Any]

PRESERVE = "x-kubernetes-preserve-unknown-fields"
VALIDATIONS = "x-kubernetes-validations"

#: keys pydantic emits that a structural schema has no use for
_DROPPED = frozenset({"title", "discriminator", "$defs"})
#: bounds whose differences between union variants become per-variant CEL rules
_BOUNDS = ("minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum")


class UnsupportedSchema(ValueError):
    """The model uses a JSON-schema construct with no structural equivalent."""


@dataclass(frozen=True)
class Rule:
    """One CEL ``x-kubernetes-validations`` entry.

    ``field_path`` (relative to the object the rule sits on, e.g. ``.entry``) makes the API
    server's error name the field; ``reason`` picks its wording (Invalid/Required/Forbidden).
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def to_schema(self) -> dict[str, str]:
        """The rule as it appears in the CRD."""
        out = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            out["fieldPath"] = self.field_path
        if self.reason is not None:
            out["reason"] = self.reason
        return out


RulesFor = Callable[[str], Sequence[Rule]]
"""Rules for a ``$defs`` entry, by its name (the model's class name)."""


def _no_rules(_name: str) -> Sequence[Rule]:
    return ()


def describe(text: str) -> str:
    """A docstring as one line of prose: RST double backticks become Markdown ones."""
    return " ".join(text.replace("``", "`").split())


class _Converter:
    def __init__(
        self, defs: Mapping[str, Schema], rules_for: RulesFor, list_map_keys: Sequence[str]
    ) -> None:
        self.defs = defs
        self.rules_for = rules_for
        self.list_map_keys = list_map_keys

    def convert(self, node: Schema) -> Schema:
        if "$ref" in node:
            out = self._ref(node)
        elif "anyOf" in node:
            out = self._nullable(node)
        elif "oneOf" in node:
            out = self._union(node)
        else:
            out = self._plain(node)
        return _ordered(out)

    def _ref(self, node: Schema) -> Schema:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        if name not in self.defs:
            raise UnsupportedSchema(f"unresolvable $ref {node['$ref']}")
        out = self.convert(self.defs[name])
        rules = [r.to_schema() for r in self.rules_for(name)]
        if rules:
            out[VALIDATIONS] = [*out.get(VALIDATIONS, []), *rules]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return self._overlay(out, siblings)

    def _nullable(self, node: Schema) -> Schema:
        variants = [v for v in node["anyOf"] if v != {"type": "null"}]
        if len(variants) != 1:
            raise UnsupportedSchema(f"anyOf of several non-null types: {node['anyOf']}")
        out = self.convert(variants[0])
        siblings = {k: v for k, v in node.items() if k != "anyOf"}
        return self._overlay(out, siblings)

    def _overlay(self, out: Schema, siblings: Schema) -> Schema:
        """Apply keys written next to a ``$ref``/``anyOf`` (description, default) over it."""
        for key, value in siblings.items():
            if key in _DROPPED or (key == "default" and value is None):
                continue
            out[key] = describe(value) if key == "description" else value
        return out

    def _plain(self, node: Schema) -> Schema:
        out: Schema = {}
        for key, value in node.items():
            if key in _DROPPED or (key == "default" and value is None):
                continue
            if key == "const":
                out["enum"] = [value]
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                out[key] = True
            elif key == "description":
                out[key] = describe(value)
            elif key == "properties":
                out[key] = {name: self.convert(prop) for name, prop in value.items()}
            elif key == "items":
                out[key] = self.convert(value)
            elif key == "additionalProperties":
                if value is True:
                    out[PRESERVE] = True
                elif isinstance(value, dict):
                    out[key] = self.convert(value)
            else:
                out[key] = value
        if (
            out.get("type") == "object"
            and "properties" not in out
            and "additionalProperties" not in out
        ):
            out[PRESERVE] = True
        if out.get("type") == "array":
            self._list_type(out)
        return out

    def _list_type(self, out: Schema) -> None:
        """Named lists are maps keyed by name: merge-friendly and unique at admission."""
        items = out.get("items", {})
        required = items.get("required", [])
        key = next((k for k in self.list_map_keys if k in required), None)
        if items.get("type") == "object" and key is not None:
            out["x-kubernetes-list-type"] = "map"
            out["x-kubernetes-list-map-keys"] = [key]

    def _union(self, node: Schema) -> Schema:
        prop = node.get("discriminator", {}).get("propertyName")
        if prop is None:
            raise UnsupportedSchema("oneOf without a discriminator")
        variants: list[tuple[str, Schema]] = []
        for ref in node["oneOf"]:
            variant = self.convert(ref)
            tags = variant.get("properties", {}).get(prop, {}).get("enum", [])
            if len(tags) != 1:
                raise UnsupportedSchema(f"union variant without a single {prop} value")
            variants.append((str(tags[0]), variant))
        merged = merge_variants(prop, variants)
        return self._overlay(merged, {k: v for k, v in node.items() if k != "oneOf"})


_FIRST = ("description", "type")
_LAST = (VALIDATIONS,)


def _ordered(schema: Schema) -> Schema:
    """Keys in reading order: what it is first, its rules last."""
    head = {k: schema[k] for k in _FIRST if k in schema}
    tail = {k: schema[k] for k in _LAST if k in schema}
    body = {k: v for k, v in schema.items() if k not in head and k not in tail}
    return {**head, **body, **tail}


def to_structural(
    schema: Schema,
    rules_for: RulesFor = _no_rules,
    list_map_keys: Sequence[str] = ("name",),
) -> Schema:
    """The structural form of a pydantic ``model_json_schema()``.

    ``rules_for`` adds CEL rules to each inlined model; arrays of objects whose items require
    one of ``list_map_keys`` (first match wins) become list maps keyed by it.
    """
    converter = _Converter(schema.get("$defs", {}), rules_for, list_map_keys)
    root = {k: v for k, v in schema.items() if k != "$defs"}
    title = schema.get("title")
    out = converter.convert(root)
    if isinstance(title, str):
        rules = [r.to_schema() for r in rules_for(title)]
        if rules:
            out[VALIDATIONS] = [*out.get(VALIDATIONS, []), *rules]
    return out


# --- discriminated unions ------------------------------------------------------------------


def _guard(prop: str, tags: Sequence[str]) -> str:
    if len(tags) == 1:
        return f"self.{prop} == '{tags[0]}'"
    return f"self.{prop} in [{', '.join(repr(t) for t in tags)}]"


def _bound_rule(prop: str, field: str, tag: str, bound: str, value: Any) -> Rule:
    size = {
        "minItems": "size() >=",
        "maxItems": "size() <=",
        "minLength": "size() >=",
        "maxLength": "size() <=",
    }
    if bound in size:
        op = size[bound]
        check = f"self.{field}.{op} {value}"
        word = "at least" if ">=" in op else "at most"
        unit = field if "Items" in bound else f"characters in {field}"
        message = f"{prop} {tag} needs {word} {value} {unit}"
    else:
        op = ">=" if bound == "minimum" else "<="
        check = f"self.{field} {op} {value}"
        message = f"{field} must be {op} {value} when {prop} is {tag}"
    return Rule(
        f"self.{prop} != '{tag}' || !has(self.{field}) || {check}", message, field_path=f".{field}"
    )


def _merge_property(
    prop: str, field: str, found: list[tuple[str, Schema]]
) -> tuple[Schema, list[Rule]]:
    """One property present in several variants: identical, or differing only in bounds."""
    first = found[0][1]

    def shape(s: Schema) -> Schema:
        return {k: v for k, v in s.items() if k not in ("description", "default", *_BOUNDS)}

    for _, other in found[1:]:
        if shape(other) != shape(first):
            raise UnsupportedSchema(f"union variants disagree on the schema of {field!r}")
    merged = dict(first)
    rules: list[Rule] = []
    for bound in _BOUNDS:
        values = [s.get(bound) for _, s in found]
        if len(set(map(repr, values))) == 1:
            continue
        present = [v for v in values if v is not None]
        loosest = None
        if len(present) == len(values):
            loosest = min(present) if bound.startswith("min") else max(present)
        if loosest is None:
            merged.pop(bound, None)
        else:
            merged[bound] = loosest
        for (tag, _), value in zip(found, values, strict=True):
            if value is not None and value != loosest:
                rules.append(_bound_rule(prop, field, tag, bound, value))
    if len({repr(s.get("default")) for _, s in found}) != 1:
        merged.pop("default", None)
    return merged, rules


def merge_variants(prop: str, variants: Sequence[tuple[str, Schema]]) -> Schema:
    """One object schema for a union discriminated by ``prop``.

    Its properties are the union of the variants'; ``prop`` is an enum of the tags. What the
    variants do not share becomes CEL rules guarded by the tag: required fields, fields only
    some variants allow, stricter bounds and the variants' own rules. Defaults survive only
    on properties every variant has, since the API server would set them on every variant;
    the tag itself keeps the one default its variants declare.
    """
    tags = [tag for tag, _ in variants]
    by_field: dict[str, list[tuple[str, Schema]]] = {}
    for tag, variant in variants:
        for field, schema in variant.get("properties", {}).items():
            if field != prop:
                by_field.setdefault(field, []).append((tag, schema))

    tag_schema: Schema = {"type": "string", "enum": tags}
    # The one tag a variant declares as its default is what a missing tag means (a gate's
    # classifier without ``type`` is a header classifier): it stays the union's default when
    # the other variants declare none, so objects written before a variant was added still
    # read the same at admission.
    declared = {
        repr(default): default
        for _, v in variants
        if (default := v.get("properties", {}).get(prop, {}).get("default")) is not None
    }
    if len(declared) == 1:
        tag_schema["default"] = next(iter(declared.values()))
    properties: Schema = {prop: tag_schema}
    rules: list[Rule] = []
    for field, found in by_field.items():
        schema, bound_rules = _merge_property(prop, field, found)
        rules.extend(bound_rules)
        owners = [tag for tag, _ in found]
        if len(owners) < len(tags):
            dropped = schema.pop("default", None)
            note = f"Only for {prop} {', '.join(owners)}."
            if dropped is not None:
                note += f" Defaults to `{json.dumps(dropped)}`."
            schema["description"] = (
                f"{schema['description']} {note}" if "description" in schema else note
            )
            rules.append(
                Rule(
                    f"!has(self.{field}) || {_guard(prop, owners)}",
                    f"{field} is only allowed when {prop} is {' or '.join(owners)}",
                    field_path=f".{field}",
                    reason="FieldValueForbidden",
                )
            )
        properties[field] = schema

    required_sets = [list(v.get("required", [])) for _, v in variants]
    required = [f for f in required_sets[0] if all(f in r for r in required_sets)]
    for (tag, variant), variant_required in zip(variants, required_sets, strict=True):
        for field in variant_required:
            if field not in required:
                rules.append(
                    Rule(
                        f"self.{prop} != '{tag}' || has(self.{field})",
                        f"{prop} {tag} needs {field}",
                        field_path=f".{field}",
                        reason="FieldValueRequired",
                    )
                )
        for raw in variant.get(VALIDATIONS, []):
            rules.append(
                _guarded(prop, tag, raw, [f for f in variant_required if f not in required])
            )

    out: Schema = {
        "type": "object",
        "description": f"Discriminated by `{prop}`. "
        + " ".join(f"{tag}: {v.get('description', '').rstrip('.')}." for tag, v in variants),
        "properties": properties,
    }
    if required:
        out["required"] = required
    if rules:
        out[VALIDATIONS] = [r.to_schema() for r in rules]
    return out


def _guarded(prop: str, tag: str, raw: Mapping[str, str], maybe_absent: Sequence[str]) -> Rule:
    """A variant's own rule, applied only to that variant (and only once its fields exist)."""
    used = [f for f in maybe_absent if re.search(rf"\bself\.{re.escape(f)}\b", raw["rule"])]
    guards = [f"self.{prop} != '{tag}'", *(f"!has(self.{f})" for f in used)]
    return Rule(
        f"{' || '.join(guards)} || ({raw['rule']})",
        raw["message"],
        field_path=raw.get("fieldPath"),
        reason=raw.get("reason"),
    )
