"""``modulemesh run`` as a user runs it: builds missing example models, starts the mesh, answers
``modulemesh infer``, and leaves no process behind when stopped (SIGTERM) or killed (SIGKILL);
refuses invalid graphs with every error and names missing model files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modulemesh.localmesh.plan import free_port

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


class Run:
    """A ``modulemesh run`` process with its output collected."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "modulemesh", "run", *args],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def wait_line(self, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            assert self.popen.poll() is None, "\n".join(self.lines[-40:])
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} in output:\n" + "\n".join(self.lines[-40:]))

    def output(self) -> str:
        self._thread.join(5)
        return "\n".join(self.lines)


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
