"""``modulemesh run`` as a user runs it: builds missing example models, starts the mesh, answers
``modulemesh infer``, and leaves no process behind when stopped (SIGTERM) or killed (SIGKILL);
refuses invalid graphs with every error and names missing model files."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modulemesh.localmesh.plan import free_port
from tests.localmesh.run_process import Run

ROOT = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """The quickstart example in a fresh directory, models not built yet."""
    examples = tmp_path / "examples"
    examples.mkdir()
    shutil.copy(ROOT / "examples" / "quickstart.yaml", examples)
    shutil.copy(ROOT / "examples" / "build_models.py", examples)
    return examples / "quickstart.yaml"


@pytest.fixture
def running(quickstart: Path) -> Iterator[tuple[Run, int]]:
    port = free_port()
    run = Run([str(quickstart), "--port", str(port), "--quiet"], quickstart.parent)
    try:
        run.wait_line("ready:")
        yield run, port
    finally:
        if run.popen.poll() is None:
            run.popen.kill()
            run.popen.wait(10)


def test_run_builds_models_serves_infer_and_stops_without_orphans(
    running: tuple[Run, int], quickstart: Path
) -> None:
    run, port = running
    assert (quickstart.parent / "models" / "embedder.onnx").exists()
    text = run.output()
    assert "built example model" in text and "CPUExecutionProvider" in text
    # The banner says what differs from a cluster: the classifier's GPU request is not met.
    assert "unlike a cluster, this local run:" in text
    assert "  - runs 'classifier' (gpu: 1) without a GPU, on CPUExecutionProvider" in text
    assert "'embedder'" not in text.split("unlike a cluster")[1].split("ready:")[0]
    assert f"  infer:     {sys.executable} -m modulemesh infer " in text
    assert "curl -s -X POST" in text
    answer = subprocess.run(
        [sys.executable, "-m", "modulemesh", "infer", f"http://127.0.0.1:{port}/v2/models/quickstart",
         "--input", "input=" + ",".join(["0.5"] * 16), "--explain"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    result = json.loads(answer.stdout)
    assert result["outputs"]["probabilities"]["shape"] == [1, 3]
    assert [e["module"] for e in result["explain"]["path"] if e["event"] == "call"] == [
        "embedder", "classifier",
    ]  # fmt: skip
    kids = children_of(run.popen.pid)
    assert len(kids) == 5  # 2 runtimes, 2 sidecars, 1 router
    run.popen.send_signal(signal.SIGTERM)
    assert run.popen.wait(30) == 0
    assert not [k for k in kids if alive(k)]
    assert "stopping" in run.output()


def test_killed_supervisor_takes_its_children_along(running: tuple[Run, int]) -> None:
    run, _ = running
    kids = children_of(run.popen.pid)
    assert len(kids) == 5
    run.popen.kill()
    run.popen.wait(10)
    deadline = time.monotonic() + 30
    while [k for k in kids if alive(k)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [k for k in kids if alive(k)]


def test_invalid_graph_is_refused_with_every_error(tmp_path: Path) -> None:
    graph = tmp_path / "bad.yaml"
    graph.write_text(
        """apiVersion: modulemesh.io/v1alpha1
kind: ModuleGraph
metadata: {name: bad}
spec:
  modules:
    - {name: a, model: {path: a.onnx}, fallback: nowhere}
  routing:
    entry: main
    nodes:
      - {name: main, type: sequence, steps: [{module: missing}]}
"""
    )
    done = subprocess.run([sys.executable, "-m", "modulemesh", "run", str(graph)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "'missing'" in done.stderr and "'nowhere'" in done.stderr
    assert "refusing to run 'bad'" in done.stderr


def test_missing_model_names_module_and_path(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(
        """apiVersion: modulemesh.io/v1alpha1
kind: ModuleGraph
metadata: {name: g}
spec:
  modules:
    - {name: clf, model: {path: models/nope.onnx}}
  routing:
    entry: main
    nodes:
      - {name: main, type: sequence, steps: [{module: clf}]}
"""
    )
    done = subprocess.run([sys.executable, "-m", "modulemesh", "run", str(graph)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert (
        f"module 'clf': model file {tmp_path / 'models' / 'nope.onnx'} does not exist"
        in done.stderr
    )


GRAPH_OF = """apiVersion: modulemesh.io/v1alpha1
kind: ModuleGraph
metadata: {{name: {name}}}
spec:
  modules:
    - {{name: clf, model: {{path: {model}}}}}
  routing:
    entry: main
    nodes:
      - {{name: main, type: sequence, steps: [{{module: clf}}]}}
"""


def run_once(
    *args: str, command: list[str] | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``modulemesh run ARGS`` that is expected to stop before starting anything."""
    return subprocess.run([*(command or [sys.executable, "-m", "modulemesh"]), "run", *args],
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip


def test_the_graph_file_also_given_as_gates_counts_once(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH_OF.format(name="g", model="models/nope.onnx"))
    (tmp_path / "link.yaml").symlink_to(graph)
    done = run_once(str(graph), "-f", str(graph), "--gates", str(tmp_path / "link.yaml"))
    assert done.returncode == 2
    assert "expected one ModuleGraph" not in done.stderr
    assert f"module 'clf': model file {tmp_path / 'models' / 'nope.onnx'} does not exist" in (
        done.stderr
    )


def test_two_graphs_are_refused_naming_each_and_its_file(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(GRAPH_OF.format(name="a", model="a.onnx"))
    second.write_text(GRAPH_OF.format(name="b", model="b.onnx"))
    done = run_once(str(first), "-f", str(second))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"modulemesh run: expected one ModuleGraph in {first} and the -f/--gates files, "
        f"found 2: 'a' in {first}, 'b' in {second}"
    ]


def test_missing_example_models_hint_works_from_a_venv_that_is_not_activated(
    tmp_path: Path,
) -> None:
    # README's set-up: `.venv/bin/modulemesh run ...` with nothing of the venv on PATH.
    console = Path(sys.executable).parent / "modulemesh"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    graph = tmp_path / "mine" / "g.yaml"
    graph.parent.mkdir()
    graph.write_text(GRAPH_OF.format(name="g", model="models/classifier-a.onnx"))
    done = run_once(str(graph), command=[str(console)], env=env)
    assert done.returncode == 2
    models = graph.parent / "models"
    hint = f"modulemesh run: build the example models with `{console} models build {models}`"
    assert hint in done.stderr.splitlines(), done.stderr
    assert "python examples/build_models.py" not in done.stderr
    command = done.stderr.split("`")[1]
    built = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120,
                           env=env, cwd=tmp_path)  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert (models / "classifier-a.onnx").exists()
    # Started as `python -m modulemesh`, the hint says that instead.
    (models / "classifier-a.onnx").unlink()
    done = run_once(str(graph))
    assert f"`{sys.executable} -m modulemesh models build {models}`" in done.stderr


def test_a_model_that_is_not_an_example_gets_only_the_path_rule(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH_OF.format(name="g", model="models/mine.onnx"))
    done = run_once(str(graph))
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "modulemesh run: fix spec.modules[].model.path (relative paths resolve against the "
        "graph file)"
    )
    assert "models build" not in done.stderr


def test_a_model_file_shared_by_modules_is_built_once(tmp_path: Path) -> None:
    shutil.copy(ROOT / "examples" / "build_models.py", tmp_path)
    graph = tmp_path / "g.yaml"
    graph.write_text(
        """apiVersion: modulemesh.io/v1alpha1
kind: ModuleGraph
metadata: {name: g}
spec:
  modules:
    - {name: a, model: {path: models/classifier-a.onnx}}
    - {name: b, model: {path: models/classifier-a.onnx}}
    - {name: c, model: {path: models/mine.onnx}}
  routing:
    entry: main
    nodes: [{name: main, type: sequence, steps: [{module: a}, {module: b}, {module: c}]}]
"""
    )
    done = run_once(str(graph))  # stops after building: c's model is no example
    assert done.returncode == 2
    assert done.stdout.splitlines() == [
        f"built example model {tmp_path / 'models' / 'classifier-a.onnx'}"
    ]
    assert f"module 'c': model file {tmp_path / 'models' / 'mine.onnx'} does not exist" in (
        done.stderr
    )


def test_cost_cascade_runs_as_its_comment_says(tmp_path: Path) -> None:
    """examples/cost-cascade.yaml locally: the banner lists large-gpu's unmet GPU and
    large-cpu's replicas; escalated requests go to the lowest score, p50 ms + 0.5 x cost +
    20 x error rate, among the candidates within the budget (p99 at most 250 ms), so
    large-gpu (cost 8) answers only while large-cpu's (cost 4) p50 runs more than 2 ms above
    its own, or large-cpu is over budget."""
    examples = tmp_path / "examples"
    examples.mkdir()
    for name in ("cost-cascade.yaml", "build_models.py"):
        shutil.copy(ROOT / "examples" / name, examples)
    port = free_port()
    run = Run([str(examples / "cost-cascade.yaml"), "--port", str(port), "--quiet"], examples)
    try:
        run.wait_line("ready:")
        banner = run.output().split("unlike a cluster, this local run:")[1].split("ready:")[0]
        assert banner.split("\n")[1:3] == [
            "  - runs 'large-gpu' (gpu: 1) without a GPU, on CPUExecutionProvider",
            "  - runs 'large-cpu' (replicas: 2) as one process",
        ]
        url = f"http://127.0.0.1:{port}/v2/models/cost-cascade"
        rng = np.random.default_rng(3)
        escalated = 0
        for _ in range(6):
            values = ",".join(f"{v:.3f}" for v in rng.standard_normal(8))
            done = subprocess.run(
                [sys.executable, "-m", "modulemesh", "infer", url, "--input", f"input={values}",
                 "--explain"], capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            path = json.loads(done.stdout)["explain"]["path"]
            decisions = [e for e in path if e["event"] == "decision" and e["node"] == "large"]
            if not decisions:
                continue
            escalated += 1
            candidates = {c["step"]: c for c in decisions[0]["candidates"]}
            for c in candidates.values():
                expected = c["latencyMs"] + 0.5 * c["cost"] + 20 * c["errorRate"]
                assert c["score"] == pytest.approx(expected, abs=1e-3)
                # the budget bounds p99, the percentile the example names
                assert c["withinBudget"] is (c["p99Ms"] is None or c["p99Ms"] <= 250)
            cpu, gpu = candidates["large-cpu"], candidates["large-gpu"]
            assert (cpu["cost"], gpu["cost"]) == (4.0, 8.0)
            within = [c for c in (cpu, gpu) if c["withinBudget"]] or [cpu, gpu]
            chosen = min(within, key=lambda c: (c["score"], c["step"] != "large-cpu"))["step"]
            assert decisions[0]["chosen"] == chosen
            assert [e["module"] for e in path if e["event"] == "call"][-1] == chosen
        assert escalated >= 4  # classifier-small is unsure of almost everything
    finally:
        run.popen.send_signal(signal.SIGTERM)
        run.popen.wait(30)
