"""Rollouts on a real local mesh (the processes `modulemesh run` starts: a runtime and a sidecar
for the stable version and for the canary, and the router walking the steps), under a steady
load of concurrent clients: a canary equal to stable is promoted through every step; a canary
that fails calls, a slower one and one with shifted confidences are rolled back at the first
step, with the figure and numbers in the reason; not one client request fails meanwhile."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from modulemesh import zoo
from modulemesh.api.graph import ModuleGraph
from modulemesh.localmesh.plan import CANARY_SUFFIX, free_port, plan_mesh
from modulemesh.localmesh.supervisor import Mesh
from tests.rollout.load import Load

STEPS = [
    {"percent": 50, "shadow": True, "holdRequests": 100},
    {"percent": 20, "holdRequests": 100},
    {"percent": 60, "holdRequests": 100},
    {"percent": 100, "holdRequests": 100},
]
TOLERANCES = {"minSamples": 100, "latencyGraceMs": 25, "maxP99Ratio": 2}


def slowed(model: onnx.ModelProto, rounds: int) -> onnx.ModelProto:
    """``model`` (a zoo classifier) with a busy branch of ``rounds`` 512x512 matrix products
    that adds zero to its logits: the same answers, computed much more slowly."""
    graph = model.graph
    div = next(i for i, n in enumerate(graph.node) if n.op_type == "Div")
    rng = np.random.default_rng(7)
    graph.initializer.extend([
        numpy_helper.from_array(rng.standard_normal((8, 512)).astype(np.float32), "busy_w"),
        numpy_helper.from_array(np.array([0.01], dtype=np.float32), "busy_scale"),
        numpy_helper.from_array(np.array([0.0], dtype=np.float32), "busy_zero"),
    ])  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["input", "busy_w"], ["busy_h"]),
        helper.make_node("Transpose", ["busy_h"], ["busy_ht"]),
        helper.make_node("MatMul", ["busy_ht", "busy_h"], ["busy_m0"]),
    ]
    for r in range(rounds):
        nodes += [
            helper.make_node("MatMul", [f"busy_m{r}", f"busy_m{r}"], [f"busy_p{r}"]),
            helper.make_node("Mul", [f"busy_p{r}", "busy_scale"], [f"busy_s{r}"]),
            helper.make_node("Tanh", [f"busy_s{r}"], [f"busy_m{r + 1}"]),
        ]
    nodes += [
        helper.make_node("ReduceMean", [f"busy_m{rounds}"], ["busy_mean"], keepdims=0),
        helper.make_node("Mul", ["busy_mean", "busy_zero"], ["busy_nothing"]),
        helper.make_node("Add", ["logits", "busy_nothing"], ["busy_logits"]),
    ]
    graph.node[div].input[0] = "busy_logits"
    for offset, node in enumerate(nodes):
        graph.node.insert(div + offset, node)
    onnx.checker.check_model(model)
    return model


CANARIES = {
    "equal": lambda: zoo.classifier(features=8, classes=3, seed=1, version="2"),
    "failing": lambda: zoo.classifier(features=9, classes=3, seed=1, version="2"),
    "slow": lambda: slowed(zoo.classifier(features=8, classes=3, seed=1, version="2"), 8),
    "unsure": lambda: zoo.classifier(features=8, classes=3, seed=1, temperature=4.0, version="2"),
}


@dataclass
class RolloutMesh:
    mesh: Mesh
    base: str
    graph: str

    def rollout(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.base}/rollouts", timeout=10).json()
        return data["rollouts"]["clf"]

    def metrics(self) -> dict[str, float]:
        """The rollout gauges on ``/metrics``: ``name{labels}`` -> value."""
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        return {
            key: float(value)
            for line in text.splitlines()
            if line.startswith("modulemesh_router_rollout_")
            for key, value in [line.rsplit(" ", 1)]
        }

    def wait_done(self, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.rollout()
            if status["phase"] != "Progressing":
                return status
            time.sleep(0.2)
        raise AssertionError(f"rollout still progressing after {timeout}s: {self.rollout()}")

    def version_served(self) -> str:
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8],
                            "data": [0.5] * 8}]}  # fmt: skip
        response = httpx.post(
            f"{self.base}/v2/models/{self.graph}/infer", json=body,
            headers={"x-modulemesh-explain": "1"}, timeout=10,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        path = response.json()["parameters"]["modulemesh_explain"]["path"]
        version: str = next(e["version"] for e in path if e.get("event") == "call")
        return version


def rollout_graph(
    stable: Path,
    canary: Path,
    steps: list[dict[str, Any]] = STEPS,
    policy: dict[str, Any] | None = None,
) -> ModuleGraph:
    return ModuleGraph.model_validate({
        "apiVersion": "modulemesh.io/v1alpha1", "kind": "ModuleGraph",
        "metadata": {"name": "ro"},
        "spec": {
            "modules": [{
                "name": "clf", "model": {"path": str(stable)}, "version": "1",
                "canary": {"model": {"path": str(canary)}, "version": "2"},
                "rollout": {"steps": steps, "tolerances": TOLERANCES},
            }],
            "routing": {"entry": "main",
                        "nodes": [{"name": "main", "type": "sequence",
                                   "steps": [{"module": "clf"}]}]},
            "policy": policy or {},
        },
    })  # fmt: skip


def _start(graph: ModuleGraph, tmp_path: Path) -> Mesh:
    mesh = Mesh(plan_mesh(graph, [], tmp_path, router_port=free_port()), log_dir=tmp_path / "logs")
    mesh.start(ready_timeout=120)
    return mesh


@pytest.fixture
def rollout_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RolloutMesh]:
    stable = zoo.save(zoo.classifier(features=8, classes=3, seed=1), tmp_path / "v1.onnx")
    canary = zoo.save(CANARIES[request.param](), tmp_path / "v2.onnx")
    mesh = _start(rollout_graph(stable, canary), tmp_path)
    try:
        yield RolloutMesh(mesh, f"http://127.0.0.1:{mesh.plan.router_port}", "ro")
    finally:
        mesh.stop()


def _run_rollout(ro: RolloutMesh) -> tuple[dict[str, Any], Load]:
    load = Load(f"{ro.base}/v2/models/{ro.graph}/infer")
    load.start()
    try:
        status = ro.wait_done()
    finally:
        load.finish()
    return status, load


def _no_request_failed(load: Load) -> None:
    assert len(load.statuses) > 100, len(load.statuses)
    assert load.failures == [], load.failures[:3]


def test_the_plan_runs_the_canary_beside_the_module(tmp_path: Path) -> None:
    stable = zoo.save(zoo.classifier(features=8, classes=3, seed=1), tmp_path / "v1.onnx")
    canary = zoo.save(CANARIES["equal"](), tmp_path / "v2.onnx")
    plan = plan_mesh(rollout_graph(stable, canary), [], tmp_path, router_port=free_port())
    try:
        assert [m.name for m in plan.modules] == ["clf", "clf" + CANARY_SUFFIX]
        own, cand = plan.modules
        assert cand.canary_of == "clf" and own.canary_of is None
        assert cand.model == canary and cand.sidecar_port != own.sidecar_port
        assert cand.runtime_socket != own.runtime_socket
        # The canary serves the model under the module's name, as its own version.
        args = cand.runtime_args
        assert args[args.index("--name") + 1] == "clf"
        assert args[args.index("--model-version") + 1] == "2"
        assert cand.sidecar_args[cand.sidecar_args.index("--module") + 1] == "clf"
        assert f"unix:{cand.runtime_socket}" in cand.sidecar_args
        assert not set(own.runtime_args + own.sidecar_args) & {str(cand.runtime_socket)}
    finally:
        assert plan.socket_dir is not None
        plan.socket_dir.rmdir()


@pytest.mark.parametrize("rollout_mesh", ["equal"], indirect=True)
def test_an_equal_canary_is_promoted_through_every_step(rollout_mesh: RolloutMesh) -> None:
    assert rollout_mesh.rollout()["phase"] == "Progressing"
    status, load = _run_rollout(rollout_mesh)
    assert status["phase"] == "Promoted", status["reason"]
    history = status["history"]
    assert [(h["type"], h["step"], h["percent"]) for h in history] == [
        ("StepPassed", 1, 50), ("StepPassed", 2, 20), ("StepPassed", 3, 60), ("Promoted", 4, 100),
    ]  # fmt: skip
    shadow = {f["name"]: f for f in history[0]["figures"]}["shadowAgreement"]
    assert shadow["canary"] == 1.0 and shadow["passed"]
    # The 100 % step has no stable calls: it is judged against the latest stable window with
    # enough calls (step 3's, or step 2's when step 3 ended before stable had minSamples).
    assert re.search(r"; stable measured in step [23], as it serves too little here$",
                     history[3]["reason"]), history[3]["reason"]  # fmt: skip
    assert status["canaryShare"] == 100
    assert rollout_mesh.version_served() == "2"
    metrics = rollout_mesh.metrics()
    labels = 'graph="ro",module="clf"'
    assert metrics[f"modulemesh_router_rollout_canary_share{{{labels}}}"] == 100.0
    assert metrics[f"modulemesh_router_rollout_step{{{labels}}}"] == 4.0
    assert metrics[f'modulemesh_router_rollout_phase{{{labels},phase="Promoted"}}'] == 1.0
    assert metrics[f'modulemesh_router_rollout_phase{{{labels},phase="Progressing"}}'] == 0.0
    _no_request_failed(load)
    router_log = "\n".join(rollout_mesh.mesh.router.lines)  # type: ignore[union-attr]
    assert "rollout of module clf: Promoted at step 4 (100%)" in router_log


@pytest.mark.parametrize(
    ("rollout_mesh", "figure", "words"),
    [
        ("failing", "errorRate", "error rate 1 is above its limit 0.01 (stable 0)"),
        ("slow", "p99LatencyMs", "p99 latency (ms)"),
        ("unsure", "confidenceMean", "mean confidence 0."),
    ],
    indirect=["rollout_mesh"],
)
def test_a_worse_canary_is_rolled_back_at_the_first_step_with_the_numbers(
    rollout_mesh: RolloutMesh, figure: str, words: str
) -> None:
    status, load = _run_rollout(rollout_mesh)
    assert status["phase"] == "RolledBack", status
    assert [(h["type"], h["step"]) for h in status["history"]] == [("RolledBack", 1)]
    reason = status["reason"]
    assert reason.startswith("step 1 of 4 (50% shadow): "), reason
    assert words in reason
    figures = {f["name"]: f for f in status["history"][0]["figures"]}
    assert figures[figure]["passed"] is False
    assert figures[figure]["canary"] is not None and figures[figure]["limit"] is not None
    assert status["canaryShare"] == 0
    assert rollout_mesh.version_served() == "1"
    metrics = rollout_mesh.metrics()
    labels = 'graph="ro",module="clf"'
    assert metrics[f"modulemesh_router_rollout_canary_share{{{labels}}}"] == 0.0
    assert metrics[f'modulemesh_router_rollout_phase{{{labels},phase="RolledBack"}}'] == 1.0
    # What the operator copies into the graph's status.
    envelopes = httpx.get(f"{rollout_mesh.base}/envelopes", timeout=10).json()
    summary = envelopes["modules"]["clf"]["rollout"]
    assert (summary["phase"], summary["reason"]) == ("RolledBack", status["reason"])
    assert {f["name"] for f in summary["figures"]} >= {figure}
    _no_request_failed(load)
    router_log = "\n".join(rollout_mesh.mesh.router.lines)  # type: ignore[union-attr]
    assert "rollout of module clf: RolledBack at step 1 (50%)" in router_log


def test_a_hung_canary_is_rolled_back_and_no_request_fails(tmp_path: Path) -> None:
    # The canary's runtime is stopped (SIGSTOP) for real: each call the canary serves hangs
    # until its half of the 1 s call time, is measured as failed, and stable answers it.
    stable = zoo.save(zoo.classifier(features=8, classes=3, seed=1), tmp_path / "v1.onnx")
    canary = zoo.save(CANARIES["equal"](), tmp_path / "v2.onnx")
    steps = [{"percent": 30, "holdRequests": 100}, {"percent": 100, "holdRequests": 100}]
    graph = rollout_graph(stable, canary, steps, {"callTimeoutMs": 1000})
    mesh = _start(graph, tmp_path)
    runtime = mesh.modules["clf" + CANARY_SUFFIX].runtime
    os.kill(runtime.pid, signal.SIGSTOP)
    try:
        ro = RolloutMesh(mesh, f"http://127.0.0.1:{mesh.plan.router_port}", "ro")
        status, load = _run_rollout(ro)
    finally:
        os.kill(runtime.pid, signal.SIGCONT)
        mesh.stop()
    assert status["phase"] == "RolledBack", status
    assert status["reason"].startswith("step 1 of 2 (30%): error rate 1 is above its limit")
    latency = {f["name"]: f for f in status["history"][0]["figures"]}["p99LatencyMs"]
    assert 450 < latency["canary"] < 1000  # the half budget, not the whole second
    _no_request_failed(load)
