"""The one YAML (and decoded JSON) reader for documents users hand us, with bounds.

PyYAML alone turns hostile or mistaken input into crashes: 1,000 nested ``[`` recurse past
Python's limit (a traceback), an alias bomb ("billion laughs") expands into gigabytes once
anything walks the result, and a duplicate key silently keeps the last value
(``resources: {gpu: 1}`` then ``{gpu: 0}`` runs without a GPU). So before anything is
constructed, one iterative pass over the parser's events (libyaml's, which keeps its own
stack) checks, per document:

* nesting depth (:data:`MAX_DEPTH` collections),
* aliases: how many (:data:`MAX_ALIASES`) and how many nodes they expand to in all
  (:data:`MAX_NODES`, counting each alias as the size of what it names),
* duplicate keys in a mapping,

and the text's size (:data:`MAX_CHARS`) is checked first. Each refusal names the field path
and line. Only then is the text loaded, with libyaml's loader (``yaml.CSafeLoader``) where it
is installed (several times faster than the pure-Python one), else ``yaml.SafeLoader``.

Decoded JSON (the admission webhook's objects) gets the same depth and size bound through
:func:`check_depth`, which walks without recursion.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
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
"""libyaml's safe loader when PyYAML was built with it, else the pure-Python one."""


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
    """One open mapping or list while scanning events."""

    mapping: bool
    start: int
    anchor: str | None
    index: int = 0
    key: str | None = None
    expecting_key: bool = True
    keys: set[tuple[str, str]] = field(default_factory=set)


_RESOLVER = Resolver()


def load_all(text: str) -> list[Any]:
    """Every document in ``text``, after :func:`check_events`; raise :class:`BoundsError` or
    ``yaml.YAMLError``."""
    if len(text) > MAX_CHARS:
        raise BoundsError(
            "", f"{len(text)} characters is more than the {MAX_CHARS} a document file may have"
        )
    check_events(yaml.parse(text, Loader=LOADER))
    return list(yaml.load_all(text, Loader=LOADER))


def check_events(events: Iterator[yaml.Event]) -> None:
    """Refuse deep nesting, alias bombs and duplicate keys, without recursing or expanding."""
    stack: list[_Frame] = []
    try:
        _scan(events, stack)
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


def _scan(events: Iterator[yaml.Event], stack: list[_Frame]) -> None:
    anchors: dict[str, int] = {}
    nodes = aliases = document = 0
    for event in events:
        if isinstance(event, yaml.DocumentStartEvent):
            document += 1
            anchors, nodes, aliases = {}, 0, 0
            continue
        if not isinstance(event, yaml.NodeEvent):
            if isinstance(event, yaml.CollectionEndEvent) and stack:
                frame = stack.pop()
                if frame.anchor is not None:
                    anchors[frame.anchor] = nodes - frame.start
                _consumed(stack)
            continue
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        parent = stack[-1] if stack else None
        at_key = parent is not None and parent.mapping and parent.expecting_key
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise BoundsError(
                    _path(stack), f"more than {MAX_ALIASES} aliases in one document", line, document
                )
            nodes += anchors.get(str(event.anchor), 1)
            if at_key and parent is not None:
                parent.key, parent.expecting_key = "*" + str(event.anchor), False
            else:
                _consumed(stack)
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if event.anchor is not None:
                anchors[event.anchor] = 1
            if at_key and parent is not None:
                _key(parent, event, stack, line, document)
            else:
                _consumed(stack)
        elif isinstance(event, yaml.CollectionStartEvent):
            nodes += 1
            if len(stack) >= MAX_DEPTH:
                raise BoundsError(
                    _path(stack, short=True),
                    f"nested more than {MAX_DEPTH} levels deep",
                    line,
                    document,
                )
            if at_key and parent is not None:
                parent.key, parent.expecting_key = "?", False
            stack.append(_Frame(isinstance(event, yaml.MappingStartEvent), nodes - 1, event.anchor))
        if nodes > MAX_NODES:
            raise BoundsError(
                _path(stack, short=True),
                f"expands to more than {MAX_NODES} values (aliases are counted as what they "
                "name); an alias bomb?",
                line,
                document,
            )


def _key(
    frame: _Frame, event: yaml.ScalarEvent, stack: list[_Frame], line: int | None, doc: int
) -> None:
    """Record a mapping key; a repeat (same resolved tag and value) is refused."""
    value = str(event.value)
    if event.tag is not None and event.tag != "!":
        tag = str(event.tag)
    else:
        tag = str(_RESOLVER.resolve(ScalarNode, value, event.implicit))  # type: ignore[no-untyped-call]
    identity = (tag, value)
    frame.key, frame.expecting_key = value, False
    if value == "<<" and tag == "tag:yaml.org,2002:merge":
        return
    if identity in frame.keys:
        raise BoundsError(
            _path(stack),
            f"duplicate key {value!r}: YAML would silently keep only the last value; "
            "remove one of them",
            line,
            doc,
        )
    frame.keys.add(identity)


def _consumed(stack: list[_Frame]) -> None:
    """A value ended inside the innermost collection: move to its next key or index."""
    if not stack:
        return
    frame = stack[-1]
    if frame.mapping:
        frame.expecting_key = True
    else:
        frame.index += 1


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
        if cut < len(parts):
            parts = [*parts[:cut]]
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
