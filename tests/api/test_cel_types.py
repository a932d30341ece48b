"""CEL conditions are type-checked against the declared variables when compiled: unknown
fields, operands CEL has no operator for, comparisons that are never true, non-bool
operands and results are refused naming the sub-expression, at ``modulemesh validate``;
what the checker accepts the real CEL library evaluates without a type error, and what it
refuses the library really fails on (or can never be true)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import cel as cel_library
import pytest
import yaml

from api.graph_builders import check, graph, one_error
from modulemesh.cel import VARIABLE_TYPES, CompileError, Environment, compile_condition

ROOT = Path(__file__).resolve().parents[2]

CONTEXT: dict[str, Any] = {
    "request": {
        "headers": {"x-route": "fast", "x-tenant": "eu"},
        "tags": ["phi"],
        "priority": "critical",
        "parameters": {"flag": True, "n": 3},
        "inputs": {"x": {"shape": [1, 2], "datatype": "FP32", "data": [0.25, 0.75]}},
    },
    "output": {"confidence": 0.7, "outputs": {"score": [0.9, 0.1]}, "module": "clf"},
}

ACCEPTED = [
    ("'x-route' in request.headers && request.headers['x-route'] == 'fast'", "switch"),
    ("request.headers.x_missing == 'a' || true", "switch"),
    ("output.confidence == null || output.confidence < 0.8", "escalate"),
    ("output.outputs['score'][0] >= 0.6", "accept"),
    ("output.outputs['score'].exists(s, s > 0.5)", "accept"),
    ("request.inputs['x'].shape[0] == 1 && request.inputs.x.datatype == 'FP32'", "switch"),
    ("request.inputs['x'].data[1] > 0.5", "switch"),
    ("request.tags.all(t, t.startsWith('p'))", "switch"),
    ("request.tags.map(t, t + '!').exists(t, t == 'phi!')", "switch"),
    ("size(request.tags.filter(t, t != 'pii')) == 1u", "switch"),
    ("request.parameters.n + 1 == 4", "switch"),
    ("has(request.headers.x) || request.priority in ['critical', 'standard']", "switch"),
    ("request['priority'] == 'critical' ? output.module == 'clf' : false", "accept"),
    ("int(request.headers['x-tenant'].size()) > 1 && 2.0 * 3.0 > 1.5", "switch"),
    ("request.priority.matches('^crit') && !(request.tags.size() > 3)", "switch"),
    ("dyn(request.priority) == 'critical'", "switch"),
]


@pytest.mark.parametrize(("expression", "environment"), ACCEPTED)
def test_accepted_conditions_evaluate_without_type_errors(
    expression: str, environment: str
) -> None:
    condition = compile_condition(expression, environment)
    assert isinstance(condition.evaluate(CONTEXT), bool)


REFUSED = [
    # unknown fields, with the closest name
    ("request.headerz['x'] == 'a'", "switch", "`request.headerz`", "did you mean 'headers'"),
    ("output.confidnce < 0.5", "escalate", "output has no field 'confidnce'", "'confidence'"),
    ("request.inputs['x'].shap[0] == 1", "switch", "tensor has no field 'shap'", "'shape'"),
    ("request['prio'] == 'critical'", "switch", "request has no field 'prio'", "priority"),
    # operands CEL has no operator for
    ("request.priority + 1 == 2", "switch", "`request.priority + 1`", "a string and an int"),
    ("output.confidence < 0.5 && output.confidence + 1 > 1", "escalate", "a double and an int"),
    ("request.tags.startsWith('p')", "switch", "startsWith() needs a string", "list(string)"),
    ("request.tags.exists(t, t > 1)", "switch", "`t > 1`", "cannot order a string"),
    ("request.inputs['x'].shape[0] % 2.0 == 0.0", "switch", "no `%`", "int and a double"),
    # comparisons that are never true
    ("request.priority == 1", "switch", "compares a string with an int", "never equal"),
    ("1 in request.tags", "switch", "an int is never in a list(string)", "elements"),
    # non-bool operands and results
    ("request.priority && true", "switch", "`request.priority`", "must be a bool"),
    ("request.tags.exists(t, t)", "switch", "predicate of exists()", "must be a bool"),
    ("request.priority", "switch", "yields string, not a bool"),
    ("size(request.tags)", "switch", "yields int, not a bool"),
    ("request.tags.map(t, t == 'phi')", "switch", "yields list(bool), not a bool"),
]


@pytest.mark.parametrize(
    ("expression", "environment", "words"), [(e, env, tuple(w)) for e, env, *w in REFUSED]
)
def test_type_errors_are_refused_naming_the_sub_expression(
    expression: str, environment: str, words: tuple[str, ...]
) -> None:
    with pytest.raises(CompileError) as caught:
        compile_condition(expression, environment)
    for word in words:
        assert word in str(caught.value), str(caught.value)


@pytest.mark.parametrize("expression", [r[0] for r in REFUSED])
def test_what_is_refused_really_fails_or_can_never_be_true(expression: str) -> None:
    """The checker is not stricter than the language: on a context with every declared
    field, each refused condition throws, or yields something other than True."""
    try:
        result = cel_library.evaluate(expression, CONTEXT)
    except Exception:
        return
    assert result is not True


def test_the_declared_types_are_the_router_context_typed_dicts() -> None:
    assert sorted(VARIABLE_TYPES["request"].field_map()) == sorted(CONTEXT["request"])
    assert sorted(VARIABLE_TYPES["output"].field_map()) == sorted(CONTEXT["output"])
    assert str(VARIABLE_TYPES["output"].field_map()["confidence"]) == "double or null"


def test_macro_variables_are_scoped_to_their_macro() -> None:
    with pytest.raises(CompileError, match=r"unknown variable 't'"):
        compile_condition("request.tags.exists(t, t == 'a') && t == 'b'", Environment.SWITCH)


# --- at validate -------------------------------------------------------------------------------


def switch_graph(when: str) -> dict[str, Any]:
    doc = graph()
    doc["spec"]["routing"] = {
        "entry": "main",
        "nodes": [
            {
                "name": "main",
                "type": "switch",
                "cases": [
                    {"when": "'phi' in request.tags", "module": "embedder"},
                    {"when": when, "module": "classifier"},
                ],
                "default": {"module": "embedder"},
            }
        ],
    }
    return doc


def test_validation_names_the_condition_field_and_what_is_wrong() -> None:
    one_error(
        check(switch_graph("request.headerz['x'] == 'a'")),
        "spec.routing.nodes[0].cases[1].when",
        "request has no field 'headerz'",
        "did you mean 'headers'",
    )
    one_error(
        check(switch_graph("request.priority + 1 == 2")),
        "spec.routing.nodes[0].cases[1].when",
        "no `+` for a string and an int",
    )


def test_validate_command_refuses_a_typo_and_a_type_error(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    for when, words in (
        ("request.headerz['x'] == 'a'", "did you mean 'headers'"),
        ("request.priority + 1 == 2", "no `+` for a string and an int"),
    ):
        path.write_text(yaml.safe_dump(switch_graph(when), sort_keys=False))
        result = subprocess.run(
            [sys.executable, "-m", "modulemesh", "validate", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, result.stderr
        assert f"error: {path}: spec.routing.nodes[0].cases[1].when: CEL condition" in result.stderr
        assert words in result.stderr


# --- the checker against the library, operator by operator ------------------------------------

ATOMS = [
    "request.headers['x-route']",
    "request.tags",
    "request.priority",
    "request.inputs['x'].shape[0]",
    "output.confidence",
    "output.module",
    "1",
    "1.5",
    "1u",
    "'a'",
    "true",
    "[1, 2]",
    "b'x'",
]
DYNAMIC = ["request.parameters.n", "output.outputs['score'][0]", "request.inputs.x.data[0]"]
OPERATORS = ["==", "<", ">=", "+", "-", "*", "/", "%", "in", "&&", "||"]


def test_every_typed_operation_the_library_fails_on_is_refused_and_no_more() -> None:
    """Each ``a OP b`` over typed values: what the library throws on is refused; what the
    checker refuses either throws, or is a comparison that can never be true or an operand
    that is not a bool (which the library may short-circuit past)."""
    wrong: list[str] = []
    for left in ATOMS + DYNAMIC:
        for right in ATOMS + DYNAMIC:
            for operator in OPERATORS:
                expression = f"{left} {operator} {right}"
                try:
                    cel_library.evaluate(expression, CONTEXT)
                    library_failed = False
                except Exception:
                    library_failed = True
                try:
                    compile_condition(expression, Environment.ESCALATE)
                    refusal = ""
                except CompileError as error:
                    refusal = str(error)
                dynamic = left in DYNAMIC or right in DYNAMIC
                if library_failed and not refusal and not dynamic:
                    wrong.append(f"accepted but fails: {expression}")
                designed = ("never equal", "is never in", "must be a bool", "not a bool")
                if refusal and not library_failed and not any(d in refusal for d in designed):
                    wrong.append(f"refused but works: {expression}: {refusal}")
    assert wrong == []
