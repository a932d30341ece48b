"""examples/rollout.yaml run as docs/operations.md shows (`modulemesh run`, then
`curl -s http://127.0.0.1:<port>/rollouts` while clients send requests): as shipped, version 2
is the same model and is promoted through every step; with the canary pointed at the unsure
small classifier, as the example's comment suggests, it is rolled back at the shadow step for
its confidences."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from modulemesh.localmesh.plan import free_port
from tests.localmesh.run_process import Run
from tests.rollout.load import Load

ROOT = Path(__file__).resolve().parents[2]


def _rollouts(port: int) -> dict[str, Any]:
    """What the documented command prints."""
    done = subprocess.run(
        ["curl", "-s", f"http://127.0.0.1:{port}/rollouts"],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    data: dict[str, Any] = json.loads(done.stdout)
    return data


@pytest.mark.parametrize(
    ("canary_model", "phase"),
    [("classifier-a", "Promoted"), ("classifier-small", "RolledBack")],
)
def test_the_example_rollout(tmp_path: Path, canary_model: str, phase: str) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed: docs/operations.md shows it")
    examples = tmp_path / "examples"
    examples.mkdir()
    shutil.copy(ROOT / "examples" / "build_models.py", examples)
    text = (ROOT / "examples" / "rollout.yaml").read_text()
    canary_line = '        model: {path: models/classifier-a.onnx}\n        version: "2"'
    assert canary_line in text
    text = text.replace(canary_line, canary_line.replace("classifier-a", canary_model))
    (examples / "rollout.yaml").write_text(text)
    port = free_port()
    run = Run([str(examples / "rollout.yaml"), "--port", str(port)], examples)
    load = Load(f"http://127.0.0.1:{port}/v2/models/rollout/infer", width=16)
    try:
        run.wait_line("ready:")
        run.wait_line("rollout:   module 'classifier' canary rolling out; curl -s http")
        first = _rollouts(port)["rollouts"]["classifier"]
        assert (first["phase"], first["step"], first["shadow"]) == ("Progressing", 1, True)
        load.start()
        deadline = time.monotonic() + 150
        while (status := _rollouts(port)["rollouts"]["classifier"])["phase"] == "Progressing":
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        load.finish()
        assert status["phase"] == phase, status["reason"]
        if phase == "Promoted":
            assert [h["type"] for h in status["history"]] == ["StepPassed"] * 3 + ["Promoted"]
        else:
            assert status["reason"].startswith("step 1 of 4 (50% shadow): ")
            assert "mean confidence" in status["reason"]
        run.wait_line(f"rollout of module classifier: {phase} at step")
        assert load.failures == [] and len(load.statuses) > 100
    finally:
        load.finish()
        if run.popen.poll() is None:
            run.popen.terminate()
            run.popen.wait(30)
