"""The ``ModuleGraph`` and ``PrivacyGate`` CRDs, generated from the spec models.

The models are the one source of truth: the checked-in ``crds/*.yaml`` and
``docs/crd-reference.md`` are this module's output, and a test fails when they drift.
Regenerate both with::

    python -m modulemesh.api.crd --write crds/ --docs docs/crd-reference.md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from modulemesh.api.base import API_GROUP, API_VERSION
from modulemesh.api.crd_rules import rules_for
from modulemesh.api.gate import PrivacyGateSpec
from modulemesh.api.graph import GRAPH_NAME_PATTERN, ModuleGraphSpec
from modulemesh.api.status import ModuleGraphStatus, PrivacyGateStatus
from modulemesh.api.structural import Schema, to_structural

REGENERATE = "python -m modulemesh.api.crd --write crds/ --docs docs/crd-reference.md"
HEADER = f"# Generated from modulemesh.api by `{REGENERATE}`. Do not edit.\n"


@dataclass(frozen=True)
class Kind:
    """One custom resource kind and how ``kubectl`` shows it."""

    kind: str
    plural: str
    short_name: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[dict[str, Any], ...]
    description: str
    name_pattern: str | None = None
    """What ``metadata.name`` must match beyond the API server's own rule (checked by CEL)."""

    @property
    def crd_name(self) -> str:
        """``<plural>.<group>``, the CRD's own name and its file name."""
        return f"{self.plural}.{API_GROUP}"


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

KINDS: tuple[Kind, ...] = (
    Kind(
        kind="ModuleGraph",
        plural="modulegraphs",
        short_name="mg",
        spec=ModuleGraphSpec,
        status=ModuleGraphStatus,
        columns=(
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            },
            {
                # Why the graph is not Ready (or GraphReady): the reason of its Ready condition,
                # which names the first blocking one (e.g. Unschedulable, ModulesNotReady).
                "name": "Reason",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            },
            {"name": "Modules", "type": "string", "jsonPath": ".status.modulesReady"},
            {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus"},
            {"name": "Rollout", "type": "string", "jsonPath": ".status.rollout"},
            {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
            _AGE,
        ),
        description="ONNX submodules, the routing policy that composes them and the privacy "
        "gates that apply; reconciled into GPU-scheduled module and router Deployments.",
        name_pattern=GRAPH_NAME_PATTERN,
    ),
    Kind(
        kind="PrivacyGate",
        plural="privacygates",
        short_name="pgate",
        spec=PrivacyGateSpec,
        status=PrivacyGateStatus,
        columns=(
            # Printer columns show only the first value a JSONPath yields, so
            # `.spec.tags[*].name` would show one tag of many: the operator writes the list
            # and the count into status for these columns.
            {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
            {"name": "Tags", "type": "string", "jsonPath": ".status.tags"},
            {"name": "Graphs", "type": "integer", "jsonPath": ".status.graphCount"},
            {"name": "Hits", "type": "integer", "jsonPath": ".status.hits"},
            {"name": "Redacted", "type": "integer", "jsonPath": ".status.redactions"},
            {"name": "Denied", "type": "integer", "jsonPath": ".status.denials"},
            {"name": "Budget", "type": "string", "jsonPath": ".status.budgetUsed"},
            _AGE,
        ),
        description="Data classes (compliance tags), how requests are classified into them, "
        "where each may be processed and what happens on a violation.",
    ),
)


def _schema(model: type[BaseModel], list_map_keys: Sequence[str]) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return to_structural(raw, rules_for, list_map_keys)


def spec_schema(kind: Kind) -> Schema:
    """The structural schema of ``spec``."""
    return _schema(kind.spec, ("name",))


def status_schema(kind: Kind) -> Schema:
    """The structural schema of ``status``; conditions are keyed by type, modules by name."""
    return _schema(kind.status, ("type", "name"))


def root_rules(kind: Kind) -> list[dict[str, str]]:
    """CEL rules on the whole object: only ``metadata.name`` is visible to them."""
    if kind.name_pattern is None:
        return []
    return [
        {
            "rule": f"self.metadata.name.matches('{kind.name_pattern}')",
            "message": "metadata.name must be a DNS-1035 label (lowercase letters, digits "
            "and '-', starting with a letter, no dots): it starts the names of the "
            f"{kind.kind}'s Services",
        }
    ]


def crd(kind: Kind) -> dict[str, Any]:
    """The ``apiextensions.k8s.io/v1`` CustomResourceDefinition of ``kind``."""
    root: Schema = {
        "type": "object",
        "description": kind.description,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(kind),
            "status": status_schema(kind),
        },
        "required": ["spec"],
    }
    if rules := root_rules(kind):
        root["x-kubernetes-validations"] = rules
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name},
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": [kind.short_name],
                "categories": ["modulemesh"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.columns),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def crds() -> list[dict[str, Any]]:
    """Every CRD ModuleMesh defines."""
    return [crd(kind) for kind in KINDS]


class _NoAliasDumper(yaml.SafeDumper):
    """Writes a value shared by two places of the schema (a model used by two fields, such as
    ``ModelSource`` in ``model`` and ``canary.model``) out in full at each: anchors and
    aliases (``&id001``/``*id001``) make a generated schema unreadable and unsearchable."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(document: dict[str, Any]) -> str:
    """The CRD as checked in: generated-file header, then YAML in the models' field order."""
    return HEADER + yaml.dump(
        document, Dumper=_NoAliasDumper, sort_keys=False, width=100, allow_unicode=True
    )


def rendered_files() -> dict[str, str]:
    """File name -> content, as ``--write`` writes them."""
    return {f"{kind.crd_name}.yaml": to_yaml(crd(kind)) for kind in KINDS}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m modulemesh.api.crd``: print the CRDs, or write them and the reference doc."""
    parser = argparse.ArgumentParser(
        prog="python -m modulemesh.api.crd",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--write", metavar="DIR", type=Path, help="write one YAML file per CRD")
    parser.add_argument("--docs", metavar="FILE", type=Path, help="write the field reference")
    args = parser.parse_args(argv)
    if args.write is None and args.docs is None:
        sys.stdout.write("---\n".join(to_yaml(c) for c in crds()))
        return 0
    if args.write is not None:
        for name, text in rendered_files().items():
            _write(args.write / name, text)
    if args.docs is not None:
        from modulemesh.api.crd_docs import reference

        _write(args.docs, reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
