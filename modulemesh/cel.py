"""The one wrapper around the CEL library (``common-expression-language``, import name ``cel``).

Conditions in a graph are compiled once (at validation and router start) and evaluated per
request. Each condition belongs to an :class:`Environment` that fixes which top-level
variables it may use:

* ``switch`` (``cases[].when``) sees ``request``;
* ``escalate`` (cascade ``escalateWhen``) sees ``request`` and ``output``;
* ``accept`` (validate ``acceptWhen``) sees ``request`` and ``output``.

The context the router passes to :meth:`Condition.evaluate` has this shape (see
:class:`RequestVars`, :class:`OutputVars`)::

    request.headers      map of lower-case header name -> value (string)
    request.tags         list of compliance tags (strings)
    request.priority     "critical" | "standard" | "sheddable"
    request.parameters   the v2 request's "parameters" map
    request.inputs[name] {"shape": [int], "datatype": "FP32", "data": [flat, row-major]}
    output.confidence    max probability of the output (double), or null when unknown
    output.outputs[name] flat, row-major list of the output tensor's values
    output.module        name of the module that produced the output

Every condition is type-checked against these declarations when it is compiled
(:mod:`modulemesh.cel_check`): an unknown field (``request.headerz``), operands CEL has no
operator for (``request.priority + 1``) or a result that is not a bool is a
:class:`CompileError` naming the sub-expression, at ``modulemesh validate``, in the admission
webhook and in the operator alike. Only values whose type depends on the data stay unchecked
until evaluation: ``request.parameters`` values, tensor ``data``, ``output.outputs`` and a
null ``output.confidence``.

A missing map key is an error at evaluation (``request.headers['x']`` without that header);
write ``'x' in request.headers && request.headers['x'] == 'v'`` to test for presence, and
``output.confidence == null || output.confidence < 0.8`` when confidence may be unknown.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypedDict

import cel as _cel

from modulemesh.cel_check import (
    STRING_METHODS,
    TIME_ACCESSORS,
    CelType,
    TypeCheckError,
    check_expression,
    type_of_annotation,
)

__all__ = [
    "CelError",
    "CompileError",
    "Condition",
    "Environment",
    "EvaluationError",
    "OutputVars",
    "RequestVars",
    "TensorVars",
    "compile_condition",
]


class Environment(StrEnum):
    """Where a condition is written; decides which variables it may use."""

    SWITCH = "switch"
    ESCALATE = "escalate"
    ACCEPT = "accept"

    @property
    def variables(self) -> frozenset[str]:
        """Top-level variables conditions in this environment may use."""
        return _VARIABLES[self]


_VARIABLES: dict[Environment, frozenset[str]] = {
    Environment.SWITCH: frozenset({"request"}),
    Environment.ESCALATE: frozenset({"request", "output"}),
    Environment.ACCEPT: frozenset({"request", "output"}),
}


class TensorVars(TypedDict):
    """One tensor as CEL sees it: ``shape``, ``datatype`` and flat row-major ``data``."""

    shape: list[int]
    datatype: str
    data: list[Any]


class RequestVars(TypedDict):
    """The ``request`` variable."""

    headers: dict[str, str]
    tags: list[str]
    priority: str
    parameters: dict[str, Any]
    inputs: dict[str, TensorVars]


class OutputVars(TypedDict):
    """The ``output`` variable: what a module (or node) produced."""

    confidence: float | None
    outputs: dict[str, list[Any]]
    module: str


VARIABLE_TYPES: dict[str, CelType] = {
    "request": type_of_annotation(RequestVars),
    "output": type_of_annotation(OutputVars),
}
"""The declared type of each variable, from the TypedDicts above: what conditions are
type-checked against (:mod:`modulemesh.cel_check`)."""


class CelError(ValueError):
    """A condition that cannot be compiled or evaluated; the message says which and why."""


class CompileError(CelError):
    """The expression is not valid CEL, or uses a variable/function that does not exist."""


class EvaluationError(CelError):
    """Evaluation failed: a missing key or variable, a type mismatch, or a non-bool result."""


# Functions the CEL library implements (checked by tests against the library itself).
# Operators (``_<_``, ``@in``, ``!_`` ...) are always allowed.
KNOWN_FUNCTIONS: frozenset[str] = (
    frozenset({"size", "int", "uint", "double", "string", "bytes", "type", "dyn"})
    | frozenset({"timestamp", "duration"})
    | STRING_METHODS
    | TIME_ACCESSORS
)

# Macros bind a loop variable: ``request.tags.exists(t, t == 'phi')`` binds ``t``.
_MACRO_BINDING = re.compile(r"\b(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")

# A sample context used once at compile time to catch conditions that never yield a bool
# (``size(request.tags)``); data-dependent failures on it are ignored.
_PROBE: dict[str, Any] = {
    "request": {"headers": {}, "tags": [], "priority": "standard", "parameters": {}, "inputs": {}},
    "output": {"confidence": 0.5, "outputs": {}, "module": ""},
}


@dataclass(frozen=True)
class Condition:
    """A compiled condition: evaluate it many times with :meth:`evaluate`."""

    expression: str
    environment: Environment
    _program: Any = field(repr=False, compare=False)

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        """True or False for ``context`` (a mapping with the environment's variables).

        Raises :class:`EvaluationError` when a variable or key is missing, types do not
        match, or the result is not a bool.
        """
        missing = sorted(v for v in self.environment.variables if v not in context)
        if missing:
            raise EvaluationError(
                f"condition {self.expression!r}: context lacks {', '.join(missing)}"
            )
        scoped = {name: context[name] for name in self.environment.variables}
        try:
            result = self._program.execute(scoped)
        except BaseException as error:  # the Rust binding raises several types, even panics
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise
            raise EvaluationError(
                f"condition {self.expression!r} failed: {_describe(error)}"
            ) from None
        if not isinstance(result, bool):
            raise EvaluationError(
                f"condition {self.expression!r} yielded {_cel_type(result)} {result!r}, "
                "not a bool; write a comparison such as `... == ...` or `... < ...`"
            )
        return result


def compile_condition(expression: str, environment: Environment | str) -> Condition:
    """Compile ``expression`` for ``environment``; raise :class:`CompileError` saying why not.

    Compiled conditions are cached, so compiling the same text again is cheap.
    """
    return _compile(expression, Environment(environment))


@functools.lru_cache(maxsize=1024)
def _compile(expression: str, environment: Environment) -> Condition:
    try:
        program = _cel.compile(expression)
        variables = set(program.variables())
        functions = set(program.functions())
    except BaseException as error:  # ValueError for syntax errors; guard against panics too
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        raise CompileError(f"not valid CEL: {_describe(error)}") from None
    bound = set(_MACRO_BINDING.findall(expression))
    unknown = sorted(variables - bound - environment.variables)
    if unknown:
        allowed = ", ".join(sorted(environment.variables))
        raise CompileError(
            f"uses {', '.join(repr(v) for v in unknown)}, which {environment.value} conditions "
            f"cannot see; they may use only: {allowed}"
        )
    unknown_functions = sorted(
        f for f in functions if f not in KNOWN_FUNCTIONS and f[:1].isalpha() and f not in bound
    )
    if unknown_functions:
        raise CompileError(
            f"calls unknown function {', '.join(repr(f) for f in unknown_functions)}; "
            f"available: {', '.join(sorted(KNOWN_FUNCTIONS))}"
        )
    try:
        result = check_expression(
            expression, {name: VARIABLE_TYPES[name] for name in environment.variables}
        )
    except TypeCheckError as error:
        raise CompileError(str(error)) from None
    if result.name not in ("bool", "dyn") or result.nullable:
        raise CompileError(
            f"yields {result}, not a bool; a condition must be true or false "
            "(write a comparison such as `size(request.tags) > 0`)"
        )
    condition = Condition(expression, environment, program)
    try:
        probe = program.execute({name: _PROBE[name] for name in environment.variables})
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        return condition  # depends on the data; evaluation reports it if it happens
    if not isinstance(probe, bool):
        raise CompileError(
            f"yields {_cel_type(probe)}, not a bool; a condition must be true or false "
            "(write a comparison such as `size(request.tags) > 0`)"
        )
    return condition


def _describe(error: BaseException) -> str:
    """The library's message, on one line, without its generic advice."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, KeyError):
        return f"no key {text} (test with `'key' in map` first)"
    first = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return first[:400]


def _cel_type(value: object) -> str:
    """The CEL name of a Python value's type, for messages."""
    names = {int: "int", float: "double", str: "string", bytes: "bytes", list: "list", dict: "map"}
    if value is None:
        return "null"
    return names.get(type(value), type(value).__name__)
