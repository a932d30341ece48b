"""The one YAML (and decoded JSON) reader for documents users hand us, with bounds.

PyYAML alone turns hostile or mistaken input into crashes: 1,000 nested ``[`` recurse past
Python's limit (a traceback), an alias bomb ("billion laughs") expands into gigabytes once
anything walks the result, an alias inside the value it names makes a cycle nothing can
render, and a duplicate key silently keeps the last value (``resources: {gpu: 1}`` then
``{gpu: 0}`` runs without a GPU). So the documents are read in one iterative pass over the
parser's events (libyaml's, which keeps its own stack), which checks, per document:

* nesting depth (:data:`MAX_DEPTH` collections),
* aliases: how many (:data:`MAX_ALIASES`), how many nodes they expand to in all
  (:data:`MAX_NODES`, counting each alias as the size of what it names), and cycles,
* duplicate keys in a mapping,

and the text's size (:data:`MAX_CHARS`) first. Each refusal names the field path and line.
The same pass builds the documents, resolving and constructing scalars as PyYAML's safe
loader does; it skips the node tree PyYAML's composer builds, which makes it several times
faster than even libyaml's ``CSafeLoader``. The little it does not build (merge keys ``<<``,
explicitly tagged collections, collections as keys) is checked all the same and then loaded
by ``yaml.CSafeLoader`` where installed, else ``yaml.SafeLoader``.

Decoded JSON (the admission webhook's objects) gets the same depth and size bound through
:func:`check_depth`, which walks without recursion.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

__all__ = [
    "LOADER",
    "MAX_ALIASES",
    "MAX_CHARS",
    "MAX_DEPTH",
    "MAX_NODES",
    "BoundsError",
    "check_depth",
    "load_all",
    "read_events",
]

MAX_CHARS = 3 * 1024 * 1024
"""Largest YAML text read (characters); the API server stores objects of at most ~1.5 MB."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists; a graph's own fields are about ten levels deep."""
MAX_ALIASES = 1000
"""Most aliases (``*name``) in one document."""
MAX_NODES = 500_000
"""Most nodes one document may expand to, each alias counted as the size of what it names."""

LOADER: type[yaml.SafeLoader] | type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML was built with it, else the pure-Python one: its parser
produces the events, and it loads what the one-pass builder leaves alone."""


class BoundsError(ValueError):
    """Input refused before construction; ``path`` is the field, ``line`` 1-based or None."""

    def __init__(self, path: str, message: str, line: int | None = None, document: int = 1):
        self.path = path
        self.line = line
        self.document = document
        self.reason = message
        at = f" (line {line})" if line is not None else ""
        super().__init__(f"{path or '<document>'}: {message}{at}")


@dataclass
class _Frame:
    """One open mapping or list while reading events."""

    mapping: bool
    start: int
    anchor: str | None
    value: Any
    index: int = 0
    key: str | None = None
    key_value: Any = None
    expecting_key: bool = True
    keys: set[tuple[str, str]] = field(default_factory=set)


_RESOLVER = Resolver()
_CONSTRUCTOR = SafeConstructor()
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_PLAIN_COLLECTIONS = frozenset({None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


class _Exotic(Exception):
    """Something the one-pass builder leaves to PyYAML's loader."""


def load_all(text: str) -> list[Any]:
    """Every document in ``text``, checked as it is read; raise :class:`BoundsError` or
    ``yaml.YAMLError``."""
    if len(text) > MAX_CHARS:
        raise BoundsError(
            "", f"{len(text)} characters is more than the {MAX_CHARS} a document file may have"
        )
    documents, exotic = read_events(yaml.parse(text, Loader=LOADER))
    if exotic:
        return list(yaml.load_all(text, Loader=LOADER))
    return documents


def read_events(events: Iterator[yaml.Event]) -> tuple[list[Any], bool]:
    """The documents the events describe, and whether PyYAML's loader must build them instead
    (then the list is incomplete). Deep nesting, alias bombs and cycles, and duplicate keys
    are refused in either case, without recursing or expanding anything."""
    stack: list[_Frame] = []
    counts = _Counts()
    documents: list[Any] = []
    exotic = False
    try:
        try:
            for event in events:
                _event(event, stack, documents, counts, True)
        except _Exotic:
            exotic = True
            for event in events:  # the rest of the stream: checks only
                _event(event, stack, None, counts, False)
    except yaml.MarkedYAMLError as error:
        # libyaml stops at 1,000 flow levels itself, scanning ahead of the events we see
        if "nesting depth" not in str(error.problem):
            raise
        mark = error.problem_mark
        raise BoundsError(
            _path(stack, short=True),
            f"nested more than {MAX_DEPTH} levels deep",
            mark.line + 1 if mark is not None else None,
        ) from None
    return documents, exotic


@dataclass
class _Counts:
    """Per-document tallies, kept across a switch from building to checking only."""

    anchors: dict[str, int] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    nodes: int = 0
    aliases: int = 0
    document: int = 0


def _event(
    event: yaml.Event,
    stack: list[_Frame],
    documents: list[Any] | None,
    counts: _Counts,
    build: bool,
) -> None:
    """Check (and build) one event."""
    if isinstance(event, yaml.DocumentStartEvent):
        counts.document += 1
        counts.anchors, counts.values, counts.nodes, counts.aliases = {}, {}, 0, 0
        return
    if not isinstance(event, yaml.NodeEvent):
        if isinstance(event, yaml.CollectionEndEvent) and stack:
            frame = stack.pop()
            if frame.anchor is not None:
                counts.anchors[frame.anchor] = counts.nodes - frame.start
            _add(stack, frame.value, documents, build)
        return
    line = event.start_mark.line + 1 if event.start_mark is not None else None
    document = counts.document
    parent = stack[-1] if stack else None
    at_key = parent is not None and parent.mapping and parent.expecting_key
    if isinstance(event, yaml.AliasEvent):
        anchor = str(event.anchor)
        counts.aliases += 1
        if counts.aliases > MAX_ALIASES:
            raise BoundsError(
                _path(stack), f"more than {MAX_ALIASES} aliases in one document", line, document
            )
        if any(frame.anchor == anchor for frame in stack):
            raise BoundsError(
                _path(stack),
                f"alias *{anchor} is inside the value it names: a cycle, which nothing can render",
                line,
                document,
            )
        counts.nodes += counts.anchors.get(anchor, 1)
        if at_key and parent is not None:
            if build:
                raise _Exotic  # an alias as a key
            parent.key, parent.expecting_key = "*" + anchor, False
        elif build and anchor not in counts.values:
            raise _Exotic  # undefined: PyYAML's loader says so, with the line
        else:
            _add(stack, counts.values.get(anchor), documents, build)
    elif isinstance(event, yaml.ScalarEvent):
        counts.nodes += 1
        value = _scalar(event) if build else None
        if event.anchor is not None:
            counts.anchors[event.anchor] = 1
            counts.values[event.anchor] = value
        if at_key and parent is not None:
            _key(parent, event, stack, line, document, value, build)
        else:
            _add(stack, value, documents, build)
    elif isinstance(event, yaml.CollectionStartEvent):
        counts.nodes += 1
        if len(stack) >= MAX_DEPTH:
            raise BoundsError(
                _path(stack, short=True),
                f"nested more than {MAX_DEPTH} levels deep",
                line,
                document,
            )
        if at_key and parent is not None:
            if build:
                raise _Exotic  # a mapping or list as a key
            parent.key, parent.expecting_key = "?", False
        if build and event.tag not in _PLAIN_COLLECTIONS:
            raise _Exotic
        mapping = isinstance(event, yaml.MappingStartEvent)
        container: Any = ({} if mapping else []) if build else None
        if event.anchor is not None:
            counts.values[event.anchor] = container
        stack.append(_Frame(mapping, counts.nodes - 1, event.anchor, container))
    if counts.nodes > MAX_NODES:
        raise BoundsError(
            _path(stack, short=True),
            f"expands to more than {MAX_NODES} values (aliases are counted as what they "
            "name); an alias bomb?",
            line,
            document,
        )


def _scalar(event: yaml.ScalarEvent) -> Any:
    """The value of a scalar, resolved and constructed as PyYAML's safe loader would."""
    tag = _tag(event)
    if tag == _STR:
        return event.value
    construct = SafeConstructor.yaml_constructors.get(tag)
    if construct is None or tag == _MERGE:
        raise _Exotic
    start: Any = event.start_mark  # libyaml's Mark type is its own
    end: Any = event.end_mark
    node = ScalarNode(tag, event.value, start, end, event.style)
    return construct(_CONSTRUCTOR, node)


def _tag(event: yaml.ScalarEvent) -> str:
    """The scalar's explicit tag, or the one YAML's implicit resolution gives it."""
    if event.tag is not None and event.tag != "!":
        return str(event.tag)
    return str(_RESOLVER.resolve(ScalarNode, event.value, event.implicit))  # type: ignore[no-untyped-call]


def _add(stack: list[_Frame], value: Any, documents: list[Any] | None, build: bool) -> None:
    """A value ended: put it into the innermost collection (or the documents) and move on."""
    if not stack:
        if build and documents is not None:
            documents.append(value)
        return
    frame = stack[-1]
    if frame.mapping:
        if build:
            frame.value[frame.key_value] = value
        frame.expecting_key = True
    else:
        if build:
            frame.value.append(value)
        frame.index += 1


def _key(
    frame: _Frame,
    event: yaml.ScalarEvent,
    stack: list[_Frame],
    line: int | None,
    document: int,
    value: Any,
    build: bool,
) -> None:
    """Record a mapping key; a repeat (same resolved tag and value, or an equal constructed
    key such as ``1`` and ``1.0``) is refused."""
    text = str(event.value)
    tag = _tag(event)
    frame.key, frame.key_value, frame.expecting_key = text, value, False
    if tag == _MERGE:
        if build:
            raise _Exotic
        return
    if (tag, text) in frame.keys or (build and value in frame.value):
        raise BoundsError(
            _path(stack),
            f"duplicate key {text!r}: YAML would silently keep only the last value; "
            "remove one of them",
            line,
            document,
        )
    frame.keys.add((tag, text))


def _path(stack: list[_Frame], *, short: bool = False) -> str:
    """``spec.modules[0].affinity`` for the open collections; ``short`` stops after the last
    mapping key so a thousand ``[0]`` do not make the message."""
    parts: list[str] = []
    for frame in stack:
        if frame.mapping:
            if frame.key is not None:
                parts.append(f".{frame.key}" if parts else frame.key)
        else:
            parts.append(f"[{frame.index}]")
    if short:
        keyed = max((i for i, p in enumerate(parts) if not p.startswith("[")), default=-1)
        cut = min(keyed + 1, 12) if keyed >= 0 else min(len(parts), 4)
        parts = parts[:cut]
    return "".join(parts)


def check_depth(obj: Any, limit: int = MAX_DEPTH, *, max_nodes: int = MAX_NODES) -> None:
    """Refuse decoded JSON/YAML nested deeper than ``limit`` or bigger than ``max_nodes``,
    naming the field; iterative, so it is safe on any input that decoded at all."""
    stack: list[tuple[Any, str, int]] = [(obj, "", 0)]
    count = 0
    while stack:
        value, path, depth = stack.pop()
        count += 1
        if count > max_nodes:
            raise BoundsError(path, f"more than {max_nodes} values")
        if isinstance(value, dict | list):
            if depth >= limit:
                raise BoundsError(_short(path), f"nested more than {limit} levels deep")
            if isinstance(value, dict):
                for key, item in value.items():
                    stack.append((item, f"{path}.{key}" if path else str(key), depth + 1))
            else:
                for index, item in enumerate(value):
                    stack.append((item, f"{path}[{index}]", depth + 1))


def _short(path: str) -> str:
    """Cut a path's trailing run of ``[0][0]...`` to the field that holds it."""
    stripped = path
    while stripped.endswith("]") and "[" in stripped:
        stripped = stripped[: stripped.rindex("[")]
    return stripped or path[:40]
