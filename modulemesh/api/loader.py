"""Reading ``ModuleGraph`` and ``PrivacyGate`` documents from YAML.

Every problem comes back as an :class:`~modulemesh.api.errors.Issue` naming the document and
field, all at once; nothing here raises on bad input except :class:`SpecError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from modulemesh.api.base import GROUP_VERSION
from modulemesh.api.bounded_yaml import BoundsError, load_all
from modulemesh.api.errors import Issue, SpecError, issues_from_pydantic
from modulemesh.api.gate import PrivacyGate
from modulemesh.api.graph import ModuleGraph

_P = TypeVar("_P", bound=str | Path)

KINDS: dict[str, type[ModuleGraph] | type[PrivacyGate]] = {
    "ModuleGraph": ModuleGraph,
    "PrivacyGate": PrivacyGate,
}


@dataclass
class Documents:
    """The graphs and gates read from one or more files, and the problems found reading them."""

    graphs: list[ModuleGraph] = field(default_factory=list)
    gates: list[PrivacyGate] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    """``kind/name`` -> file it came from, so relative model paths resolve against it."""


def parse_object(obj: Any, where: str) -> ModuleGraph | PrivacyGate | list[Issue]:
    """Validate one decoded document; issues are prefixed with ``where`` (e.g. ``a.yaml#1``)."""
    if not isinstance(obj, dict):
        return [
            Issue(
                where,
                f"expected a mapping with apiVersion, kind, metadata, spec; got {type(obj).__name__}",
            )
        ]
    kind = obj.get("kind")
    if kind not in KINDS:
        return [
            Issue(f"{where}: kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        ]
    if obj.get("apiVersion") != GROUP_VERSION:
        return [
            Issue(
                f"{where}: apiVersion", f"expected {GROUP_VERSION!r}, got {obj.get('apiVersion')!r}"
            )
        ]
    try:
        return KINDS[kind].model_validate(obj)
    except ValidationError as error:
        return [
            Issue(f"{where}: {i.path}", i.message, i.severity) for i in issues_from_pydantic(error)
        ]


def load_text(text: str, source: str = "<input>") -> Documents:
    """Parse every YAML document in ``text`` with the bounded reader (depth, aliases, duplicate
    keys and size checked first, see :mod:`modulemesh.api.bounded_yaml`)."""
    docs = Documents()
    try:
        decoded = [d for d in load_all(text) if d is not None]
    except BoundsError as error:
        where = source if error.document <= 1 else f"{source}#{error.document}"
        at = f" (line {error.line})" if error.line is not None else ""
        docs.issues.append(
            Issue(f"{where}: {error.path}" if error.path else where, error.reason + at)
        )
        return docs
    except yaml.YAMLError as error:
        docs.issues.append(Issue(source, f"not valid YAML: {error}"))
        return docs
    for index, obj in enumerate(decoded):
        where = source if len(decoded) == 1 else f"{source}#{index + 1}"
        parsed = parse_object(obj, where)
        if isinstance(parsed, list):
            docs.issues.extend(parsed)
        elif isinstance(parsed, ModuleGraph):
            docs.graphs.append(parsed)
            docs.sources[f"ModuleGraph/{parsed.metadata.name}"] = source
        else:
            docs.gates.append(parsed)
            docs.sources[f"PrivacyGate/{parsed.metadata.name}"] = source
    return docs


def unique_files(paths: Iterable[_P]) -> list[_P]:
    """``paths`` without the ones naming a file already listed (``g.yaml -f ./g.yaml``, a
    symlink to it), in order: a file given twice is read once, not counted as two graphs."""
    seen: set[Path] = set()
    unique: list[_P] = []
    for path in paths:
        key = Path(path).resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def load_files(paths: Iterable[str | Path]) -> Documents:
    """Parse every document of every file (each file once, see :func:`unique_files`);
    unreadable files are issues too."""
    merged = Documents()
    for path in unique_files(paths):
        try:
            text = Path(path).read_text()
        except OSError as error:
            merged.issues.append(Issue(str(path), f"cannot read file: {error.strerror}"))
            continue
        docs = load_text(text, str(path))
        merged.graphs += docs.graphs
        merged.gates += docs.gates
        merged.issues += docs.issues
        merged.sources.update(docs.sources)
    return merged


def load_graph(path: str | Path) -> ModuleGraph:
    """Load the single ModuleGraph in ``path``, or raise :class:`SpecError`."""
    docs = load_files([path])
    if docs.issues:
        raise SpecError(docs.issues, str(path))
    if len(docs.graphs) != 1:
        raise SpecError([Issue(str(path), f"expected one ModuleGraph, found {len(docs.graphs)}")])
    return docs.graphs[0]
