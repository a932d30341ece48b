"""A rollout survives its router's restart (issue 16, point 5): the router keeps each rollout's
state (versions, steps, phase, step, reason, history and the baseline stable window) in its
``--rollout-state`` file, written at each step, and a new router resumes there. Unit: the
controller's saved state round-trips, and state of another rollout (other versions or steps) or
a malformed one is ignored. Real processes: under `modulemesh run`'s supervisor and steady load,
the router killed with SIGKILL mid-rollout comes back at the step it had reached (not step 1),
finishes the rollout (its 100 % step judged against the restored baseline), and killed again
after the promotion still serves the canary."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from modulemesh import zoo
from modulemesh.api.graph import RolloutPolicy
from modulemesh.rollout.controller import Controller, Phase, Route
from tests.rollout.load import Load
from tests.rollout.test_rollout_mesh import CANARIES, RolloutMesh, _start, rollout_graph

STEPS = [
    {"percent": 20, "holdRequests": 100},
    {"percent": 60, "holdRequests": 100},
    {"percent": 100, "holdRequests": 100},
]


def _controller(steps: list[dict[str, Any]], canary: str = "2") -> Controller:
    policy = RolloutPolicy.model_validate({"steps": steps, "tolerances": {"minSamples": 20}})
    return Controller("clf", policy, stable_version="1", canary_version=canary)


def _walk_one_step(c: Controller) -> None:
    for route in (Route.STABLE, Route.CANARY):
        for i in range(100):
            c.record(route, 2.0, True, 0.7 + (i % 10) / 100)
    assert c.evaluate() is not None


class TestSavedState:
    def test_a_new_controller_resumes_the_step_history_and_baseline(self) -> None:
        old = _controller(STEPS)
        _walk_one_step(old)
        _walk_one_step(old)
        saved = old.saved()
        new = _controller(STEPS)
        assert new.resume(saved)
        assert (new.phase, new.step) == (Phase.PROGRESSING, 2)
        assert [t.as_dict() for t in new.history] == [t.as_dict() for t in old.history]
        assert new.baseline is not None and old.baseline is not None
        assert new.baseline[0] == old.baseline[0]
        assert list(new.baseline[1].confidences) == list(old.baseline[1].confidences)
        assert new.stable.calls == new.canary.calls == 0  # the step's hold starts again

    def test_an_ended_rollout_stays_ended(self) -> None:
        old = _controller(STEPS[2:])
        _walk_one_step(old)
        assert old.phase is Phase.PROMOTED
        new = _controller(STEPS[2:])
        assert new.resume(old.saved())
        assert new.phase is Phase.PROMOTED and new.route("any") is Route.CANARY

    def test_state_of_another_rollout_or_a_malformed_one_is_ignored(self) -> None:
        old = _controller(STEPS)
        _walk_one_step(old)
        saved = old.saved()
        for other in (_controller(STEPS, canary="3"), _controller(STEPS[1:])):
            assert not other.resume(saved)
            assert other.step == 0
        fresh = _controller(STEPS)
        assert not fresh.resume({**saved, "step": 9})
        assert not fresh.resume({**saved, "phase": "Sideways"})
        assert not fresh.resume({**saved, "history": [{"type": "StepPassed"}]})
        assert fresh.step == 0 and fresh.history == []


def _router_pid(ro: RolloutMesh) -> int:
    assert ro.mesh.router is not None
    return ro.mesh.router.popen.pid


def _wait_new_router(ro: RolloutMesh, old_pid: int, timeout: float = 60.0) -> dict[str, Any]:
    """The rollout as the router that replaced ``old_pid`` first reports it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _router_pid(ro) != old_pid:
            try:
                return ro.rollout()
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"no new router within {timeout}s")


def test_a_router_killed_mid_rollout_resumes_at_its_step(tmp_path: Path) -> None:
    stable = zoo.save(zoo.classifier(features=8, classes=3, seed=1), tmp_path / "v1.onnx")
    canary = zoo.save(CANARIES["equal"](), tmp_path / "v2.onnx")
    mesh = _start(rollout_graph(stable, canary, steps=STEPS), tmp_path)
    stop = threading.Event()
    supervisor = threading.Thread(target=mesh.supervise, args=(stop,), daemon=True)
    supervisor.start()
    ro = RolloutMesh(mesh, f"http://127.0.0.1:{mesh.plan.router_port}", "ro")
    load = Load(f"{ro.base}/v2/models/{ro.graph}/infer")
    load.start()
    try:
        deadline = time.monotonic() + 90
        while (status := ro.rollout())["step"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status["step"] >= 2 and status["phase"] == "Progressing", status
        reached = status["step"]
        pid = _router_pid(ro)
        os.kill(pid, signal.SIGKILL)
        resumed = _wait_new_router(ro, pid)
        assert resumed["step"] >= reached, resumed
        assert resumed["history"][0]["type"] == "StepPassed"
        assert resumed["history"][0]["step"] == 1
        router_log = "\n".join(mesh.router.lines)  # type: ignore[union-attr]
        assert "rollout of module clf: version 1 -> 2, resumed (Progressing) at step" in router_log

        done = ro.wait_done(timeout=120)
        assert done["phase"] == "Promoted", done["reason"]
        assert [(h["type"], h["step"]) for h in done["history"]] == [
            ("StepPassed", 1), ("StepPassed", 2), ("Promoted", 3),
        ]  # fmt: skip
        assert "as it serves too little here" in done["history"][-1]["reason"]

        pid = _router_pid(ro)
        os.kill(pid, signal.SIGKILL)
        after = _wait_new_router(ro, pid)
        assert after["phase"] == "Promoted" and after["canaryShare"] == 100, after
        deadline = time.monotonic() + 30
        while True:
            try:
                assert ro.version_served() == "2"
                break
            except (httpx.HTTPError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        load.finish()
        stop.set()
        supervisor.join(10)
        mesh.stop()
    assert len(load.statuses) > 300, len(load.statuses)
