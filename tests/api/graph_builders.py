"""Small spec dicts for validation tests: a valid baseline graph and gate, plus helpers that
run the real loader and validator over them and pick out the issues at one field path."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from modulemesh.api import Issue, Severity, load_text
from modulemesh.api.validation import validate_documents

BASE_GRAPH: dict[str, Any] = {
    "apiVersion": "modulemesh.io/v1alpha1",
    "kind": "ModuleGraph",
    "metadata": {"name": "g"},
    "spec": {
        "modules": [
            {"name": "embedder", "model": {"path": "embedder.onnx"}},
            {"name": "classifier", "model": {"path": "classifier.onnx"}},
        ],
        "routing": {
            "entry": "main",
            "nodes": [
                {
                    "name": "main",
                    "type": "sequence",
                    "steps": [
                        {"module": "embedder", "inputs": {"input": "request.input"}},
                        {"module": "classifier", "inputs": {"input": "embedder.embedding"}},
                    ],
                }
            ],
        },
    },
}


def graph(**spec: Any) -> dict[str, Any]:
    """The baseline graph with top-level spec fields replaced."""
    doc = copy.deepcopy(BASE_GRAPH)
    doc["spec"].update(copy.deepcopy(spec))
    return doc


def module(name: str, **fields: Any) -> dict[str, Any]:
    """A module dict with a local model path."""
    return {"name": name, "model": {"path": f"{name}.onnx"}, **fields}


def gate(name: str, *tags: dict[str, Any], mode: str = "enforce") -> dict[str, Any]:
    """A PrivacyGate dict."""
    return {
        "apiVersion": "modulemesh.io/v1alpha1",
        "kind": "PrivacyGate",
        "metadata": {"name": name},
        "spec": {"mode": mode, "tags": list(tags)},
    }


def check(*docs: dict[str, Any]) -> list[Issue]:
    """Load ``docs`` as one YAML file ``t.yaml`` and validate everything in it."""
    text = yaml.safe_dump_all(list(docs), sort_keys=False)
    return validate_documents(load_text(text, "t.yaml"))


def at(issues: list[Issue], path: str) -> list[Issue]:
    """The issues whose field path (after the file prefix) is exactly ``path``."""
    return [i for i in issues if i.path.split(": ", 1)[-1] == path]


def one_error(issues: list[Issue], path: str, *words: str) -> Issue:
    """The single error at ``path``; its message must contain every one of ``words``."""
    found = [i for i in at(issues, path) if i.severity is Severity.ERROR]
    assert len(found) == 1, f"expected one error at {path}, got: {[str(i) for i in issues]}"
    for word in words:
        assert word in found[0].message, f"{word!r} not in {found[0].message!r}"
    return found[0]


def one_warning(issues: list[Issue], path: str, *words: str) -> Issue:
    """The single warning at ``path``; its message must contain every one of ``words``."""
    found = [i for i in at(issues, path) if i.severity is Severity.WARNING]
    assert len(found) == 1, f"expected one warning at {path}, got: {[str(i) for i in issues]}"
    for word in words:
        assert word in found[0].message, f"{word!r} not in {found[0].message!r}"
    return found[0]
