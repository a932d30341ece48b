"""PrivacyGate ``differentialPrivacy`` fields: what is accepted, and what is refused with a
message naming the problem (each mechanism takes exactly its parameters, an answer must fit
the budget, no output twice, a gate must declare something)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from modulemesh.api.gate import Mechanism, PrivacyGate


def gate(dp: dict[str, Any] | None, tags: list[dict[str, Any]] | None = None) -> PrivacyGate:
    spec: dict[str, Any] = {}
    if dp is not None:
        spec["differentialPrivacy"] = dp
    if tags is not None:
        spec["tags"] = tags
    return PrivacyGate.model_validate(
        {"apiVersion": "modulemesh.io/v1alpha1", "kind": "PrivacyGate",
         "metadata": {"name": "g"}, "spec": spec}
    )  # fmt: skip


def dp(*outputs: dict[str, Any], epsilon: float = 1.0, delta: float = 0.0) -> dict[str, Any]:
    return {
        "principal": {"header": "x-tenant"},
        "budget": {"epsilon": epsilon, "delta": delta, "windowSeconds": 3600},
        "outputs": list(outputs),
    }


LAPLACE = {"module": "m", "mechanism": "laplace", "sensitivity": 1, "epsilon": 0.5}
GAUSSIAN = {"module": "m", "mechanism": "gaussian", "sensitivity": 1, "epsilon": 0.5,
            "delta": 1e-6}  # fmt: skip


class TestAccepted:
    def test_laplace_and_gaussian_outputs(self) -> None:
        g = gate(dp(LAPLACE, {**GAUSSIAN, "module": "n"}, delta=1e-5))
        spec = g.spec.differential_privacy
        assert spec is not None and spec.budget.window_seconds == 3600
        assert [o.mechanism for o in spec.outputs] == [Mechanism.LAPLACE, Mechanism.GAUSSIAN]
        assert g.spec.tags == []

    def test_window_defaults_to_a_day(self) -> None:
        body = dp(LAPLACE)
        del body["budget"]["windowSeconds"]
        spec = gate(body).spec.differential_privacy
        assert spec is not None and spec.budget.window_seconds == 86400


class TestRefused:
    @pytest.mark.parametrize(
        ("body", "needle"),
        [
            (dp({**LAPLACE, "delta": 1e-6}), "delta is for gaussian outputs"),
            (dp({k: v for k, v in GAUSSIAN.items() if k != "delta"}), "needs delta"),
            (dp({**LAPLACE, "epsilon": 0}), "greater than 0"),
            (dp({**LAPLACE, "sensitivity": -1}), "greater than 0"),
            (dp({**LAPLACE, "epsilon": float("inf")}), "finite number"),
            (dp({**LAPLACE, "mechanism": "exponential"}), "'laplace' or 'gaussian'"),
            (dp({**LAPLACE, "epsilon": 2}), "more than the whole budget"),
            (dp(LAPLACE, {**LAPLACE, "output": "y", "epsilon": 0.6}), "more than once"),
            (dp(LAPLACE, {**LAPLACE, "epsilon": 0.1}), "more than once"),
            (dp({**GAUSSIAN, "delta": 1e-3}, delta=1e-4), "more than the whole budget"),
            (dp(), "at least 1 item"),
        ],
    )
    def test_bad_fields_are_named(self, body: dict[str, Any], needle: str) -> None:
        with pytest.raises(ValidationError, match=needle):
            gate(body)

    def test_two_outputs_of_one_module_add_up_against_the_budget(self) -> None:
        with pytest.raises(ValidationError, match=r"module 'm' costs epsilon 1\.2"):
            gate(dp({**LAPLACE, "output": "a", "epsilon": 0.6},
                    {**LAPLACE, "output": "b", "epsilon": 0.6}))  # fmt: skip

    def test_a_gate_declares_something(self) -> None:
        with pytest.raises(ValidationError, match="needs tags, differentialPrivacy or both"):
            gate(None, [])

    def test_principal_header_must_be_a_header_name(self) -> None:
        body = dp(LAPLACE)
        body["principal"]["header"] = "x tenant"
        with pytest.raises(ValidationError, match=r"principal\.header"):
            gate(body)
