"""The operator's envelope feed against a real router: ``modulemesh run`` serves the quickstart
mesh on 127.0.0.1, the operator's ``fetch_envelopes`` reads the router's ``/envelopes``, and the
status computed from it shows every module Healthy with live figures, and Degraded
(GPUFallbackToCPU) for the classifier, which asks for a GPU and runs on this machine's CPU
provider; a stopped router shows as Unknown with the reason, never as a failure of Ready."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from localmesh.test_run import Run

from modulemesh.api import load_graph
from modulemesh.localmesh.plan import free_port
from modulemesh.operator.handlers import fetch_envelopes
from modulemesh.operator.observe import Observation, compute_status

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Run, int, Path]]:
    examples = tmp_path / "examples"
    examples.mkdir()
    for name in ("quickstart.yaml", "build_models.py"):
        (examples / name).write_bytes((ROOT / "examples" / name).read_bytes())
    port = free_port()
    run = Run([str(examples / "quickstart.yaml"), "--port", str(port), "--quiet"], examples)
    try:
        run.wait_line("ready:")
        yield run, port, examples / "quickstart.yaml"
    finally:
        if run.popen.poll() is None:
            run.popen.kill()
            run.popen.wait(10)


def test_envelopes_from_a_live_router_become_module_status(mesh: tuple[Run, int, Path]) -> None:
    run, port, graph_file = mesh
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(5):
        answer = subprocess.run(
            [sys.executable, "-m", "modulemesh", "infer", f"{endpoint}/v2/models/quickstart",
             "--input", "input=" + ",".join(["0.25"] * 16)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout)["outputs"]["probabilities"]["shape"] == [1, 3]

    envelopes, error = asyncio.run(fetch_envelopes(endpoint))
    assert error is None
    assert envelopes is not None and set(envelopes) == {"embedder", "classifier"}
    graph = load_graph(graph_file)
    fields, updates = compute_status(Observation(graph=graph, envelopes=envelopes))
    by_name = {m["name"]: m for m in fields["modules"]}
    for name in ("embedder", "classifier"):
        summary = by_name[name]["envelope"]
        assert summary["state"] == "Healthy", summary
        assert summary["p99Ms"] > 0 and summary["errorRate"] == 0.0
        assert by_name[name]["provider"] == "CPUExecutionProvider"
    assert 0.0 < by_name["classifier"]["envelope"]["confidence"] <= 1.0
    # The quickstart's classifier asks for a GPU; here its runtime fell back to the CPU
    # provider, which its envelope reports, and the graph says so.
    degraded = next(u for u in updates if u.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "GPUFallbackToCPU"), degraded
    assert "classifier has resources.gpu 1 but serves on CPUExecutionProvider" in degraded.message
    assert "embedder" not in degraded.message

    run.popen.kill()  # the supervisor's children die with it, a moment later
    run.popen.wait(10)
    deadline = time.monotonic() + 20
    while True:
        envelopes, error = asyncio.run(fetch_envelopes(endpoint))
        if envelopes is None or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert envelopes is None and error is not None and "unreachable" in error
    fields, updates = compute_status(
        Observation(graph=graph, envelopes=envelopes, envelope_error=error)
    )
    assert all(m["envelope"]["state"] == "Unknown" for m in fields["modules"])
    degraded = next(u for u in updates if u.type == "Degraded")
    assert degraded.status == "Unknown" and "unreachable" in degraded.message
