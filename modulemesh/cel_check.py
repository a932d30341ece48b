"""Static type-checking of CEL conditions against the variables a graph's nodes expose.

The CEL library the router evaluates with (``common-expression-language``) parses and runs
expressions but has no type checker: ``request.headerz['x']`` or ``request.priority + 1``
compile fine and then fail on every request (a 422). So conditions are parsed here (the
CEL grammar, https://github.com/google/cel-spec/blob/master/doc/langdef.md) and every
sub-expression is given a type from the declared variables (:data:`VARIABLE_TYPES`, derived
from :class:`~modulemesh.cel.RequestVars` and :class:`~modulemesh.cel.OutputVars`, so the
declaration and the router's context cannot drift apart). Refused, naming the
sub-expression:

* a field the variable does not have (``request.headerz``), with the closest name;
* operators whose operand types CEL has no overload for (``string + int``, ``int + double``:
  CEL never converts), comparisons that can never be true (``request.priority == 1``),
  non-bool operands of ``!``, ``&&``, ``||``, ``?:`` and macro predicates;
* functions called with the wrong receiver or arguments (``request.tags.startsWith('a')``);
* a condition whose type is not bool.

What stays dynamic, and so is checked only at evaluation: the values of ``request.parameters``
and of tensor ``data`` and ``output.outputs`` (their element type depends on the tensor's
datatype), a map key that may be absent, and ``output.confidence``, which is null when the
module reports none.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = [
    "STRING_METHODS",
    "TIME_ACCESSORS",
    "CelType",
    "TypeCheckError",
    "check_expression",
    "type_of_annotation",
]


class TypeCheckError(ValueError):
    """The expression is well-formed CEL but cannot work with the declared types."""


# --- types -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CelType:
    """A CEL type: a primitive ``name``, ``list``/``map`` with parameters, an object with
    ``fields`` (a variable whose fields are known), ``dyn``, or ``name?`` (value or null)."""

    name: str
    params: tuple[CelType, ...] = ()
    fields: tuple[tuple[str, CelType], ...] = field(default=(), compare=False)
    nullable: bool = False

    def __str__(self) -> str:
        if self.fields:
            return self.name
        text = f"{self.name}({', '.join(map(str, self.params))})" if self.params else self.name
        return f"{text} or null" if self.nullable else text

    def field_map(self) -> dict[str, CelType]:
        return dict(self.fields)

    def strict(self) -> CelType:
        """The type without its null option."""
        return CelType(self.name, self.params, self.fields) if self.nullable else self


INT, UINT, DOUBLE = CelType("int"), CelType("uint"), CelType("double")
STRING, BYTES, BOOL = CelType("string"), CelType("bytes"), CelType("bool")
NULL, DYN, TYPE = CelType("null_type"), CelType("dyn"), CelType("type")
TIMESTAMP, DURATION = CelType("google.protobuf.Timestamp"), CelType("google.protobuf.Duration")
NUMERIC = frozenset({"int", "uint", "double"})
ORDERED = frozenset({"string", "bytes", "bool", TIMESTAMP.name, DURATION.name})


def list_of(elem: CelType) -> CelType:
    return CelType("list", (elem,))


def map_of(key: CelType, value: CelType) -> CelType:
    return CelType("map", (key, value))


def type_of_annotation(annotation: Any, name: str = "") -> CelType:
    """The CEL type of a Python annotation: ``str`` -> string, ``list[int]`` -> list(int),
    a TypedDict -> an object with its fields, ``X | None`` -> nullable X, ``Any`` -> dyn."""
    if annotation is Any:
        return DYN
    simple = {str: STRING, int: INT, float: DOUBLE, bool: BOOL, bytes: BYTES}
    if annotation in simple:
        return simple[annotation]
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = type_of_annotation(args[0], name) if len(args) == 1 else DYN
        return CelType(inner.name, inner.params, inner.fields, nullable=True)
    if origin is list:
        return list_of(type_of_annotation(typing.get_args(annotation)[0]))
    if origin is dict:
        key, value = typing.get_args(annotation)
        return map_of(type_of_annotation(key), type_of_annotation(value))
    if typing.is_typeddict(annotation):
        hints = typing.get_type_hints(annotation)
        fields = tuple(sorted((k, type_of_annotation(v, k)) for k, v in hints.items()))
        return CelType(name or annotation.__name__.removesuffix("Vars").lower(), fields=fields)
    raise TypeError(f"no CEL type for {annotation!r}")


# --- tokens ----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>(?:[rR][bB]?|[bB][rR]?)?(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''
        |"(?:\\[\s\S]|[^"\\\n])*"|'(?:\\[\s\S]|[^'\\\n])*'))
  | (?P<number>0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.\d+|\.\d+|\d+)(?:[eE][+-]?\d+)?[uU]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>==|!=|<=|>=|&&|\|\||[<>!+\-*/%?:.,()\[\]{}])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int


def _tokens(expression: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None:
            raise TypeCheckError(f"unexpected character {expression[position]!r} at {position}")
        kind = str(match.lastgroup)
        if kind != "space":
            tokens.append(_Token(kind, match.group(), position))
        position = match.end()
    tokens.append(_Token("end", "", len(expression)))
    return tokens


# --- syntax tree -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    kind: str  # literal, ident, select, index, call, list, map, unary, binary, cond
    start: int
    end: int
    value: str = ""  # literal text, identifier, field, function or operator
    children: tuple[_Node, ...] = ()
    target: bool = False  # call: children[0] is the receiver


class _Parser:
    """Recursive descent over CEL's grammar; precedence as in the spec."""

    def __init__(self, expression: str) -> None:
        self.tokens = _tokens(expression)
        self.position = 0

    def peek(self, *texts: str) -> bool:
        token = self.tokens[self.position]
        if token.kind == "punct":
            return token.text in texts
        return token.kind == "ident" and token.text == "in" and "in" in texts

    def take(self) -> _Token:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def expect(self, text: str) -> _Token:
        token = self.take()
        if token.text != text:
            raise TypeCheckError(f"expected {text!r} at {token.start}")
        return token

    def end_of_previous(self) -> int:
        token = self.tokens[self.position - 1]
        return token.start + len(token.text)

    def parse(self) -> _Node:
        node = self.expr()
        if self.tokens[self.position].kind != "end":
            raise TypeCheckError(f"unexpected {self.tokens[self.position].text!r}")
        return node

    def expr(self) -> _Node:
        condition = self.binary(0)
        if self.peek("?"):
            self.take()
            then = self.binary(0)
            self.expect(":")
            otherwise = self.expr()
            return _Node("cond", condition.start, otherwise.end, "?:", (condition, then, otherwise))
        return condition

    _LEVELS: tuple[tuple[str, ...], ...] = (
        ("||",),
        ("&&",),
        ("==", "!=", "<", "<=", ">", ">=", "in"),
        ("+", "-"),
        ("*", "/", "%"),
    )

    def binary(self, level: int) -> _Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek(*self._LEVELS[level]):
            operator = self.take().text
            right = self.binary(level + 1)
            left = _Node("binary", left.start, right.end, operator, (left, right))
        return left

    def unary(self) -> _Node:
        if self.peek("!", "-"):
            token = self.take()
            operand = self.unary()
            if token.text == "-" and operand.kind == "literal" and operand.value[:1].isdigit():
                return _Node("literal", token.start, operand.end, "-" + operand.value)
            return _Node("unary", token.start, operand.end, token.text, (operand,))
        return self.member()

    def member(self) -> _Node:
        node = self.primary()
        while True:
            if self.peek("."):
                self.take()
                name = self.take()
                if name.kind != "ident":
                    raise TypeCheckError(f"expected a field name at {name.start}")
                if self.peek("("):
                    args = self.arguments(")")
                    node = _Node(
                        "call",
                        node.start,
                        self.end_of_previous(),
                        name.text,
                        (node, *args),
                        target=True,
                    )
                else:
                    node = _Node("select", node.start, self.end_of_previous(), name.text, (node,))
            elif self.peek("["):
                self.take()
                index = self.expr()
                self.expect("]")
                node = _Node("index", node.start, self.end_of_previous(), "", (node, index))
            else:
                return node

    def arguments(self, close: str) -> list[_Node]:
        self.take()  # the opening bracket
        items: list[_Node] = []
        while not self.peek(close):
            items.append(self.expr())
            if not self.peek(close):
                self.expect(",")
        self.expect(close)
        return items

    def primary(self) -> _Node:
        token = self.tokens[self.position]
        if token.kind in ("string", "number"):
            self.take()
            return _Node("literal", token.start, token.start + len(token.text), token.text)
        if token.kind == "ident":
            self.take()
            if token.text in ("true", "false", "null"):
                return _Node("literal", token.start, token.start + len(token.text), token.text)
            if self.peek("("):
                args = self.arguments(")")
                return _Node("call", token.start, self.end_of_previous(), token.text, tuple(args))
            return _Node("ident", token.start, token.start + len(token.text), token.text)
        if self.peek("."):  # a leading dot names the root scope: .request
            self.take()
            return self.primary()
        if self.peek("("):
            self.take()
            inner = self.expr()
            self.expect(")")
            return inner
        if self.peek("["):
            items = self.arguments("]")
            return _Node("list", token.start, self.end_of_previous(), "", tuple(items))
        if self.peek("{"):
            self.take()
            entries: list[_Node] = []
            while not self.peek("}"):
                entries.append(self.expr())
                self.expect(":")
                entries.append(self.expr())
                if not self.peek("}"):
                    self.expect(",")
            self.expect("}")
            return _Node("map", token.start, self.end_of_previous(), "", tuple(entries))
        raise TypeCheckError(f"unexpected {token.text or 'end of expression'!r} at {token.start}")


# --- checking --------------------------------------------------------------------------------

_TYPE_NAMES: dict[str, CelType] = {
    name: TYPE
    for name in ("int", "uint", "double", "string", "bytes", "bool", "list", "map", "null_type")
}
STRING_METHODS = frozenset({"matches", "contains", "startsWith", "endsWith"})
TIME_ACCESSORS = frozenset(
    {
        "getDate",
        "getDayOfMonth",
        "getDayOfWeek",
        "getDayOfYear",
        "getFullYear",
        "getHours",
        "getMilliseconds",
        "getMinutes",
        "getMonth",
        "getSeconds",
    }
)
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


def check_expression(expression: str, variables: Mapping[str, CelType]) -> CelType:
    """The type of ``expression`` given ``variables``; raise :class:`TypeCheckError` saying
    which sub-expression is wrong and why."""
    try:
        tree = _Parser(expression).parse()
        return _Checker(expression, variables).check(tree, {})
    except RecursionError:
        raise TypeCheckError("nested too deeply to check") from None


class _Checker:
    def __init__(self, expression: str, variables: Mapping[str, CelType]) -> None:
        self.expression = expression
        self.variables = variables

    def text(self, node: _Node) -> str:
        return f"`{self.expression[node.start : node.end]}`"

    def fail(self, node: _Node, message: str) -> TypeCheckError:
        return TypeCheckError(f"{self.text(node)}: {message}")

    def check(self, node: _Node, scope: Mapping[str, CelType]) -> CelType:
        method = getattr(self, f"_{node.kind}")
        result: CelType = method(node, scope)
        return result

    def _literal(self, node: _Node, scope: Mapping[str, CelType]) -> CelType:
        text = node.value
        if text in ("true", "false"):
            return BOOL
        if text == "null":
            return NULL
        if text[:1] in "\"'" or text[:1] in "rRbB":
            prefix = text[: len(text) - len(text.lstrip("rRbB"))]
            return BYTES if "b" in prefix.lower() else STRING
        if text[-1:] in "uU":
            return UINT
        if not text.lower().startswith(("0x", "-0x")) and any(c in text for c in ".eE"):
            return DOUBLE
        return INT

    def _ident(self, node: _Node, scope: Mapping[str, CelType]) -> CelType:
        if node.value in scope:
            return scope[node.value]
        if node.value in self.variables:
            return self.variables[node.value]
        if node.value in _TYPE_NAMES:
            return TYPE
        known = ", ".join(sorted({*scope, *self.variables}))
        raise self.fail(node, f"unknown variable {node.value!r}; this condition can use: {known}")

    def _field(self, node: _Node, owner: CelType, name: str, what: _Node) -> CelType:
        """The type of field ``name`` of a value of type ``owner`` (``what`` is that value)."""
        if owner.nullable:
            raise self.fail(
                node,
                f"{self.text(what)} may be null; test `{self.expression[what.start : what.end]}"
                " != null` first",
            )
        if owner.fields:
            fields = owner.field_map()
            if name in fields:
                return fields[name]
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise self.fail(
                node,
                f"{owner.name} has no field {name!r}{hint} Its fields: {', '.join(sorted(fields))}",
            )
        if owner.name == "map":
            self.assignable(node, owner.params[0], STRING, "a map key")
            return owner.params[1]
        if owner == DYN:
            return DYN
        raise self.fail(node, f"{self.text(what)} is {_a(owner)}, which has no fields")

    def _select(self, node: _Node, scope: Mapping[str, CelType]) -> CelType:
        operand = node.children[0]
        return self._field(node, self.check(operand, scope), node.value, operand)

    def _index(self, node: _Node, scope: Mapping[str, CelType]) -> CelType:
        operand, index = node.children
        owner = self.check(operand, scope)
        key = self.check(index, scope)
        if owner.fields and not owner.nullable:
            if index.kind == "literal" and key == STRING:
                return self._field(node, owner, _string_value(index.value), operand)
            self.assignable(node, key, STRING, "a field name")
            return DYN
        if owner.name == "list" and not owner.nullable:
            if key.name not in ("int", "uint", "dyn"):
                raise self.fail(node, f"a list index must be an int, not {key}")
            return owner.params[0]
        if owner.name == "map" and not owner.nullable:
            self.assignable(node, key, owner.params[0], "a key of this map")
            return owner.params[1]
        if owner == DYN:
            return DYN
        raise self.fail(node, f"{self.text(operand)} is {_a(owner)}, which cannot be indexed")

    def assignable(self, node: _Node, actual: CelType, wanted: CelType, what: str) -> None:
        if not _comparable(actual, wanted):
            raise self.fail(node, f"{what} must be {_a(wanted)}, not {_a(actual)}")

    def _list(self, node: _Node, scope: Mapping[str, CelType]) -> CelType:
        return list_of(_join([self.check(c, scope) for c in node.children]))

    def _map(self, node: _Node, scope: Mapping[str, CelType]) -> CelType:
        kinds = [self.check(c, scope) for c in node.children]
        return map_of(_join(kinds[0::2]), _join(kinds[1::2]))

    def want_bool(self, node: _Node, actual: CelType, role: str) -> None:
        if actual.name not in ("bool", "dyn") or actual.nullable:
            raise self.fail(node, f"{role} must be a bool, but is {_a(actual)}")

    def _unary(self, node: _Node, scope: Mapping[str, CelType]) -> CelType:
        operand = self.check(node.children[0], scope)
        if node.value == "!":
            self.want_bool(node.children[0], operand, "the operand of `!`")
            return BOOL
        if operand.name in ("int", "double", "dyn") and not operand.nullable:
            return operand
        raise self.fail(node, f"cannot negate {_a(operand)}")

    def _cond(self, node: _Node, scope: Mapping[str, CelType]) -> CelType:
        condition, then, otherwise = node.children
        self.want_bool(condition, self.check(condition, scope), "the condition of `?:`")
        left, right = self.check(then, scope), self.check(otherwise, scope)
        joined = _join([left, right])
        if joined == DYN and DYN not in (left, right) and not _comparable(left, right):
            raise self.fail(node, f"its branches have different types: {left} and {right}")
        return joined

    def _binary(self, node: _Node, scope: Mapping[str, CelType]) -> CelType:
        left_node, right_node = node.children
        left, right = self.check(left_node, scope), self.check(right_node, scope)
        operator = node.value
        if operator in ("&&", "||"):
            self.want_bool(left_node, left, f"each operand of `{operator}`")
            self.want_bool(right_node, right, f"each operand of `{operator}`")
            return BOOL
        if operator in ("==", "!="):
            if not _comparable(left, right):
                raise self.fail(
                    node, f"compares {_a(left)} with {_a(right)}, which are never equal in CEL"
                )
            return BOOL
        if operator in ("<", "<=", ">", ">="):
            if DYN in (left.strict(), right.strict()):
                return BOOL
            if {left.name, right.name} <= NUMERIC or (
                left.name == right.name and left.name in ORDERED
            ):
                return BOOL
            raise self.fail(node, f"cannot order {_a(left)} against {_a(right)}")
        if operator == "in":
            return self._in(node, left, right)
        return self._arithmetic(node, operator, left, right)

    def _in(self, node: _Node, item: CelType, container: CelType) -> CelType:
        if container == DYN:
            return BOOL
        if container.fields and not container.nullable:
            self.assignable(node, item, STRING, "the left side of `in` (a field name)")
            return BOOL
        if container.name in ("list", "map") and not container.nullable:
            if not _comparable(item, container.params[0]):
                what = "elements" if container.name == "list" else "keys"
                raise self.fail(
                    node,
                    f"{_a(item)} is never in {_a(container)} (its {what} are {container.params[0]})",
                )
            return BOOL
        raise self.fail(node, f"the right side of `in` must be a list or map, not {container}")

    def _arithmetic(self, node: _Node, operator: str, left: CelType, right: CelType) -> CelType:
        left, right = left.strict(), right.strict()  # null is data: evaluation reports it
        if DYN in (left, right):
            return left if right == DYN else right
        allowed = {
            "+": ("int", "uint", "double", "string", "bytes", "list", DURATION.name),
            "-": ("int", "uint", "double", DURATION.name),
            "*": ("int", "uint", "double"),
            "/": ("int", "uint", "double"),
            "%": ("int", "uint"),
        }[operator]
        if left.name == right.name and left.name in allowed:
            return (
                list_of(_join([left.params[0], right.params[0]])) if left.name == "list" else left
            )
        times = {TIMESTAMP.name, DURATION.name}
        if operator == "+" and {left.name, right.name} == times:
            return TIMESTAMP
        if operator == "-" and left.name == TIMESTAMP.name and right.name in times:
            return DURATION if right.name == TIMESTAMP.name else TIMESTAMP
        hint = ""
        if {left.name, right.name} <= NUMERIC:
            hint = "; CEL does not convert between number types: write int(x), uint(x) or double(x)"
        elif {left.name, right.name} & NUMERIC and "string" in (left.name, right.name):
            hint = "; CEL does not convert strings and numbers: write int(x) or string(x)"
        raise self.fail(node, f"no `{operator}` for {_a(left)} and {_a(right)}{hint}")

    def _call(self, node: _Node, scope: Mapping[str, CelType]) -> CelType:
        name = node.value
        receiver_node = node.children[0] if node.target else None
        args = list(node.children[1:] if node.target else node.children)
        if receiver_node is not None and name in _MACROS:
            return self._macro(node, receiver_node, args, scope)
        if name == "has" and receiver_node is None:
            if len(args) != 1 or args[0].kind != "select":
                raise self.fail(node, "has() takes one field selection, as in has(a.b)")
            operand = args[0].children[0]
            owner = self.check(operand, scope)
            if owner.fields:
                self._field(args[0], owner, args[0].value, operand)
            elif owner.name not in ("map", "dyn"):
                raise self.fail(node, f"has() needs a map or object, not {owner}")
            return BOOL
        receiver = self.check(receiver_node, scope) if receiver_node is not None else None
        types_ = [self.check(a, scope) for a in args]
        if name == "size":
            operands = [receiver] if receiver is not None else types_
            if len(operands) != 1 or (receiver is not None and types_):
                raise self.fail(node, "size takes one value: size(x) or x.size()")
            kind = operands[0]
            sized = kind.name in ("string", "bytes", "list", "map", "dyn") or bool(kind.fields)
            if sized and not kind.nullable:
                return INT
            raise self.fail(node, f"size() needs a string, bytes, list or map, not {kind}")
        if name in STRING_METHODS:
            if receiver is None:
                raise self.fail(node, f"call {name} on a string: s.{name}(...)")
            self.expect_args(node, types_, [STRING])
            if receiver.name not in ("string", "dyn") or receiver.nullable:
                raise self.fail(node, f"{name}() needs a string, not {receiver}")
            return BOOL
        if name in TIME_ACCESSORS:
            if receiver is None or receiver.name not in (TIMESTAMP.name, DURATION.name, "dyn"):
                raise self.fail(node, f"{name}() is a method of timestamps (and durations)")
            return INT
        if receiver is not None:
            raise self.fail(node, f"{name}() is not a method CEL offers here")
        return self._global(node, name, types_)

    def expect_args(self, node: _Node, actual: Sequence[CelType], wanted: list[CelType]) -> None:
        if len(actual) != len(wanted):
            raise self.fail(node, f"takes {len(wanted)} argument(s), got {len(actual)}")
        for got, want in zip(actual, wanted, strict=True):
            if got.name not in (want.name, "dyn") or got.nullable:
                raise self.fail(node, f"needs {_a(want)} argument, not {_a(got)}")

    def _global(self, node: _Node, name: str, args: list[CelType]) -> CelType:
        sources = {
            "int": ({"int", "uint", "double", "string", TIMESTAMP.name}, INT),
            "uint": ({"int", "uint", "double", "string"}, UINT),
            "double": ({"int", "uint", "double", "string"}, DOUBLE),
            "string": ({"int", "uint", "double", "string", "bytes", "bool"}, STRING),
            "bytes": ({"string", "bytes"}, BYTES),
            "timestamp": ({"string", TIMESTAMP.name}, TIMESTAMP),
            "duration": ({"string", DURATION.name}, DURATION),
            "dyn": (None, DYN),
            "type": (None, TYPE),
        }
        if name not in sources:
            raise self.fail(node, f"unknown function {name!r}")
        accepted, result = sources[name]
        if len(args) != 1:
            raise self.fail(node, f"{name}() takes one argument")
        if accepted is not None and args[0].name not in accepted | {"dyn"}:
            raise self.fail(node, f"{name}() cannot convert {_a(args[0])}")
        return result  # a null argument is data: evaluation reports it

    def _macro(
        self,
        node: _Node,
        receiver_node: _Node,
        args: list[_Node],
        scope: Mapping[str, CelType],
    ) -> CelType:
        name = node.value
        arity = (2, 3) if name == "map" else (2,)
        if len(args) not in arity or args[0].kind != "ident":
            raise self.fail(
                node, f"{name}() takes a variable name and an expression: {name}(x, ...)"
            )
        container = self.check(receiver_node, scope)
        if container.name in ("list", "map") and not container.nullable:
            element = container.params[0]
        elif container.fields and not container.nullable:
            element = STRING
        elif container == DYN:
            element = DYN
        else:
            raise self.fail(node, f"{name}() needs a list or map, not {container}")
        inner = {**scope, args[0].value: element}
        body = [self.check(a, inner) for a in args[1:]]
        if name != "map" or len(args) == 3:
            self.want_bool(args[1], body[0], f"the predicate of {name}()")
        if name == "map":
            return list_of(body[-1])
        if name == "filter":
            return list_of(element)
        return BOOL


def _a(kind: CelType) -> str:
    """``a string``, ``an int``: the type with its article, for messages."""
    text = str(kind)
    return f"an {text}" if text[:1] in "aeiou" else f"a {text}"


def _string_value(literal: str) -> str:
    """The value of a simple string literal (enough to name a field)."""
    body = literal.lstrip("rRbB")
    quote = 3 if body[:3] in ('"""', "'''") else 1
    return body[quote:-quote]


def _comparable(a: CelType, b: CelType) -> bool:
    """Whether values of types ``a`` and ``b`` can ever be equal."""
    if DYN in (a.strict(), b.strict()):
        return True
    if NULL in (a, b):
        return (a if b == NULL else b).nullable or a == b
    a, b = a.strict(), b.strict()
    if a.name in NUMERIC and b.name in NUMERIC:
        return True
    if a.fields or b.fields:
        return a.name == b.name or "map" in (a.name, b.name)
    if a.name != b.name:
        return False
    return all(_comparable(x, y) for x, y in zip(a.params, b.params, strict=True))


def _join(kinds: list[CelType]) -> CelType:
    """One type for a list literal's elements or ``?:``'s branches: the common one, else dyn."""
    if not kinds:
        return DYN
    nullable = any(k == NULL or k.nullable for k in kinds)
    rest = [k.strict() for k in kinds if k != NULL]
    if not rest:
        return NULL
    if all(k == rest[0].strict() for k in rest):
        base = rest[0].strict()
        return CelType(base.name, base.params, base.fields, nullable=nullable)
    return DYN
