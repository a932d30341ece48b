"""``modulemesh.cel``: compiling conditions per environment, evaluating them against the
documented request/output context, and the errors for bad expressions and bad contexts."""

from __future__ import annotations

from typing import Any

import cel as cel_library
import pytest

from modulemesh.cel import (
    KNOWN_FUNCTIONS,
    CompileError,
    Environment,
    EvaluationError,
    compile_condition,
)


def request(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "headers": {},
        "tags": [],
        "priority": "standard",
        "parameters": {},
        "inputs": {},
    }
    return {**base, **fields}


def output(confidence: float | None = 0.9, **outputs: list[float]) -> dict[str, Any]:
    return {"confidence": confidence, "outputs": outputs, "module": "clf"}


@pytest.mark.parametrize(
    ("expression", "req", "expected"),
    [
        ("'phi' in request.tags", request(tags=["phi"]), True),
        ("'phi' in request.tags", request(tags=["pii"]), False),
        ("request.tags.exists(t, t.startsWith('ph'))", request(tags=["phi"]), True),
        ("request.priority == 'critical'", request(priority="critical"), True),
        (
            "'x-tenant' in request.headers && request.headers['x-tenant'] == 'eu'",
            request(headers={"x-tenant": "eu"}),
            True,
        ),
        ("'x-tenant' in request.headers && request.headers['x-tenant'] == 'eu'", request(), False),
        (
            "request.inputs['input'].shape[0] > 4",
            request(inputs={"input": {"shape": [8, 2], "datatype": "FP32", "data": [0.0] * 16}}),
            True,
        ),
        (
            "request.inputs['input'].datatype == 'FP32' && request.inputs['input'].data[1] > 0.5",
            request(inputs={"input": {"shape": [2], "datatype": "FP32", "data": [0.0, 0.7]}}),
            True,
        ),
        ("request.parameters.mode == 'fast'", request(parameters={"mode": "fast"}), True),
    ],
)
def test_switch_conditions_evaluate_over_the_request(
    expression: str, req: dict[str, Any], expected: bool
) -> None:
    condition = compile_condition(expression, Environment.SWITCH)
    assert condition.evaluate({"request": req}) is expected


def test_escalate_condition_sees_output_confidence_and_outputs() -> None:
    low = compile_condition("output.confidence < 0.8", "escalate")
    assert low.evaluate({"request": request(), "output": output(0.5)}) is True
    assert low.evaluate({"request": request(), "output": output(0.95)}) is False
    guarded = compile_condition("output.confidence == null || output.confidence < 0.8", "escalate")
    assert guarded.evaluate({"request": request(), "output": output(None)}) is True
    by_tensor = compile_condition("output.outputs['probs'][1] > 0.5", "accept")
    assert by_tensor.evaluate({"request": request(), "output": output(probs=[0.2, 0.8])}) is True
    assert (
        compile_condition("output.module == 'clf'", "accept").evaluate(
            {"request": request(), "output": output()}
        )
        is True
    )


def test_switch_conditions_cannot_see_output() -> None:
    with pytest.raises(CompileError, match=r"'output'.*may use only: request"):
        compile_condition("output.confidence < 0.5", Environment.SWITCH)


def test_unknown_variable_is_named() -> None:
    with pytest.raises(CompileError, match=r"'req'"):
        compile_condition("req.priority == 'critical'", Environment.ESCALATE)


def test_macro_loop_variables_are_not_unknown_variables() -> None:
    compile_condition("request.tags.all(tag, tag != 'phi')", Environment.SWITCH)
    compile_condition("output.outputs['p'].exists(x, x > 0.9)", Environment.ACCEPT)


def test_syntax_error_is_a_compile_error() -> None:
    with pytest.raises(CompileError, match="not valid CEL"):
        compile_condition("request.priority ==", Environment.SWITCH)


def test_unknown_function_is_named_at_compile_time() -> None:
    with pytest.raises(CompileError, match=r"unknown function 'lowerAscii'"):
        compile_condition("request.priority.lowerAscii() == 'x'", Environment.SWITCH)


def test_non_bool_result_is_refused_at_compile_time() -> None:
    with pytest.raises(CompileError, match=r"yields int, not a bool"):
        compile_condition("size(request.tags)", Environment.SWITCH)
    with pytest.raises(CompileError, match=r"yields string, not a bool"):
        compile_condition("request.priority", Environment.SWITCH)


def test_non_bool_result_depending_on_data_is_an_evaluation_error() -> None:
    condition = compile_condition("request.parameters.flag", Environment.SWITCH)
    assert condition.evaluate({"request": request(parameters={"flag": True})}) is True
    with pytest.raises(EvaluationError, match=r"yielded int 3, not a bool"):
        condition.evaluate({"request": request(parameters={"flag": 3})})


def test_missing_key_is_an_evaluation_error_naming_the_key() -> None:
    condition = compile_condition("request.headers['x-tenant'] == 'eu'", Environment.SWITCH)
    with pytest.raises(EvaluationError, match=r"no key 'x-tenant'"):
        condition.evaluate({"request": request()})


def test_type_mismatch_is_an_evaluation_error() -> None:
    condition = compile_condition("output.confidence < 0.8", Environment.ESCALATE)
    with pytest.raises(EvaluationError, match="No such overload"):
        condition.evaluate({"request": request(), "output": output(None)})


def test_context_without_an_environment_variable_is_an_evaluation_error() -> None:
    condition = compile_condition("output.confidence < 0.8", Environment.ESCALATE)
    with pytest.raises(EvaluationError, match="context lacks output"):
        condition.evaluate({"request": request()})


def test_extra_context_variables_are_not_visible() -> None:
    condition = compile_condition("'phi' in request.tags", Environment.SWITCH)
    assert condition.evaluate({"request": request(tags=["phi"]), "secret": 1}) is True


def test_compiled_once_and_reused() -> None:
    first = compile_condition("'a' in request.tags", Environment.SWITCH)
    again = compile_condition("'a' in request.tags", "switch")
    assert first is again
    results = [first.evaluate({"request": request(tags=[t])}) for t in ("a", "b", "a")]
    assert results == [True, False, True]


@pytest.mark.parametrize("name", sorted(KNOWN_FUNCTIONS))
def test_every_known_function_is_implemented_by_the_library(name: str) -> None:
    samples = {
        "size": "size([1])",
        "int": "int(1.5)",
        "uint": "uint(1)",
        "double": "double(1)",
        "string": "string(1)",
        "bytes": "bytes('a')",
        "type": "type(1)",
        "dyn": "dyn(1)",
        "matches": "'ab'.matches('a.')",
        "contains": "'ab'.contains('a')",
        "startsWith": "'ab'.startsWith('a')",
        "endsWith": "'ab'.endsWith('b')",
        "timestamp": "timestamp('2024-01-02T03:04:05Z')",
        "duration": "duration('1s')",
    }
    expression = samples.get(name, f"timestamp('2024-01-02T03:04:05Z').{name}()")
    program = cel_library.compile(expression)
    assert name in program.functions()
    program.execute({})
