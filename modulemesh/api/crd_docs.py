"""``docs/crd-reference.md``: every field of every kind, rendered from the generated CRD schemas.

Generated from the same structural schemas the CRDs carry, so the reference, ``kubectl explain``
and admission never disagree. Regenerate with the command in :data:`modulemesh.api.crd.REGENERATE`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from modulemesh.api.base import GROUP_VERSION
from modulemesh.api.crd import KINDS, REGENERATE, Kind, root_rules, spec_schema, status_schema
from modulemesh.api.structural import PRESERVE, VALIDATIONS, Schema


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _bounds(schema: Schema) -> list[str]:
    out: list[str] = []
    unit = {"array": " items", "string": " chars"}.get(str(schema.get("type")), "")
    lo = schema.get("minItems", schema.get("minLength"))
    hi = schema.get("maxItems", schema.get("maxLength"))
    if lo is not None or hi is not None:
        out.append(f"{'' if lo is None else lo}..{'' if hi is None else hi}{unit}")
    if "minimum" in schema:
        out.append(f"{'>' if schema.get('exclusiveMinimum') else '>='} {schema['minimum']}")
    if "maximum" in schema:
        out.append(f"{'<' if schema.get('exclusiveMaximum') else '<='} {schema['maximum']}")
    if "enum" in schema:
        out.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    if "pattern" in schema:
        out.append(f"pattern `{schema['pattern']}`")
    return out


def _type(schema: Schema) -> str:
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"[]{_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        return f"map[string]{_type(schema['additionalProperties'])}"
    if kind == "object" and schema.get(PRESERVE):
        return "object (free-form)"
    return kind


def _rows(schema: Schema, path: str, required: bool) -> Iterator[tuple[str, str, str, str]]:
    facts = [_type(schema), *_bounds(schema)]
    if required:
        facts.insert(0, "**required**")
    default = "" if "default" not in schema else f"`{json.dumps(schema['default'])}`"
    description = schema.get("description") or schema.get("items", {}).get("description", "")
    yield (f"`{path}`", ", ".join(facts), default, description)
    node = schema
    suffix = ""
    while node.get("type") == "array":
        node = node.get("items", {})
        suffix += "[]"
    if node.get("type") == "object" and "additionalProperties" in node:
        node = node["additionalProperties"]
        suffix += ".*"
    needed = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        yield from _rows(child, f"{path}{suffix}.{name}", name in needed)


def _rules(schema: Schema, path: str) -> Iterator[tuple[str, str, str]]:
    for rule in schema.get(VALIDATIONS, []):
        where = path + str(rule.get("fieldPath", ""))
        yield (f"`{where}`", rule["message"], f"`{rule['rule']}`")
    if schema.get("type") == "array":
        yield from _rules(schema.get("items", {}), path + "[]")
    for name, child in schema.get("properties", {}).items():
        yield from _rules(child, f"{path}.{name}")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _kind_section(kind: Kind) -> list[str]:
    spec, status = spec_schema(kind), status_schema(kind)
    lines = [
        f"## {kind.kind}",
        "",
        f"`apiVersion: {GROUP_VERSION}`, `kind: {kind.kind}`; plural `{kind.plural}`, "
        f"short name `{kind.short_name}`, category `modulemesh`, namespaced.",
        "",
        kind.description,
        "",
        "### spec",
        "",
    ]
    header = ("Field", "Type", "Default", "Description")
    spec_rows: list[tuple[str, ...]] = list(_rows(spec, "spec", True))
    lines += [*_table(header, spec_rows[1:]), "", "### Rules checked at admission", ""]
    rules: list[tuple[str, ...]] = [
        ("`metadata.name`", rule["message"], f"`{rule['rule']}`") for rule in root_rules(kind)
    ]
    rules += _rules(spec, "spec")
    if rules:
        lines += [
            "Besides the types and bounds above, the API server refuses objects that break "
            "these CEL rules (the error names the field):",
            "",
            *_table(("Field", "Message", "CEL"), rules),
        ]
    else:
        lines.append("Types and bounds only; no cross-field rules.")
    lines += [
        "",
        "### status",
        "",
        "Written by the operator through the status subresource.",
        "",
    ]
    status_rows: list[tuple[str, ...]] = list(_rows(status, "status", False))
    lines += [*_table(header, status_rows[1:]), ""]
    columns = ", ".join(f"{c['name']} (`{c['jsonPath']}`)" for c in kind.columns)
    lines += [f"`kubectl get {kind.short_name}` columns: {columns}.", ""]
    return lines


def reference() -> str:
    """The whole reference document as Markdown."""
    lines = [
        "# CRD reference",
        "",
        f"<!-- Generated from modulemesh.api by `{REGENERATE}`. Do not edit. -->",
        "",
        "Every field of the ModuleMesh custom resources, generated from the spec models in "
        "`modulemesh/api/` (the same schemas as `crds/`). Types and bounds are checked at "
        "admission; semantic validation (`modulemesh validate`, the operator's admission "
        "webhook, and its `Validated` condition) checks what needs the whole graph: "
        "references, cycles, reachability and the static privacy check.",
        "",
        "Optional fields are simply left out; a routing node's fields depend on its `type` "
        '(a field marked "Only for type ..." is refused on other types).',
        "",
    ]
    for kind in KINDS:
        lines += _kind_section(kind)
    return "\n".join(lines).rstrip("\n") + "\n"
