"""Every example in examples/ loads, validates and renders; the models they reference build,
deterministically, and behave as the examples say (small model unsure, large one confident);
the build command the examples and the README show works as shown."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modulemesh import example_models
from modulemesh.api.errors import Severity
from modulemesh.api.loader import load_files
from modulemesh.api.validation import document_reports
from modulemesh.operator.render import render
from modulemesh.operator.settings import RenderSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
YAMLS = sorted(EXAMPLES.glob("*.yaml"))


def test_the_promised_examples_exist() -> None:
    names = {p.name for p in YAMLS}
    assert {
        "quickstart.yaml",
        "ensemble-switch.yaml",
        "phi-gate.yaml",
        "cost-cascade.yaml",
    } <= names


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_example_loads_validates_and_renders(path: Path) -> None:
    assert path.read_text().startswith("#"), (
        "each example opens with a comment saying what it shows"
    )
    docs = load_files([path])
    assert docs.issues == []
    assert docs.graphs, "each example holds a ModuleGraph"
    for report in document_reports(docs):
        assert [str(i) for i in report.issues if i.severity is Severity.ERROR] == []
    for graph in docs.graphs:
        objects = render(graph, docs.gates, RenderSettings())
        deployments = [o for o in objects if o["kind"] == "Deployment"]
        canaries = sum(m.canary is not None for m in graph.spec.modules)
        assert len(deployments) == len(graph.spec.modules) + canaries + 1
        for module in graph.spec.modules:
            if module.model.path is not None:
                model = Path(module.model.path)
                assert not model.is_absolute() and model.parts[0] == "models"
                assert model.stem in example_models.MODELS, f"{model} is not built by build_models"


def test_phi_example_keeps_phi_modules_in_the_eu() -> None:
    docs = load_files([EXAMPLES / "phi-gate.yaml"])
    (graph,) = docs.graphs
    objects = render(graph, docs.gates, RenderSettings())
    for obj in objects:
        if (
            obj["kind"] != "Deployment"
            or obj["metadata"]["labels"]["app.kubernetes.io/component"] != "module"
        ):
            continue
        module = graph.spec.module(obj["metadata"]["labels"]["modulemesh.io/module"])
        assert module is not None
        pod = obj["spec"]["template"]["spec"]
        term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        regions = term["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
        assert regions == (["eu-west"] if "phi" in module.clearance else [module.region])
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


def test_build_is_deterministic_and_idempotent(tmp_path: Path) -> None:
    first = example_models.build(tmp_path / "a")
    second = example_models.build(tmp_path / "b")
    assert [p.name for p in first] == [f"{n}.onnx" for n in example_models.MODELS]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    mtimes = [p.stat().st_mtime_ns for p in first]
    example_models.build(tmp_path / "a")
    assert [p.stat().st_mtime_ns for p in first] == mtimes
    assert example_models.missing([tmp_path / "c" / "validator.onnx", first[0], "x.txt"]) == [
        "validator"
    ]
    with pytest.raises(KeyError, match="no example model"):
        example_models.build(tmp_path, ["nope"])


def test_models_chain_and_differ_in_confidence(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    paths = {p.stem: str(p) for p in example_models.build(tmp_path)}

    def run(name: str, feed: dict[str, np.ndarray]) -> np.ndarray:
        session = ort.InferenceSession(paths[name], providers=["CPUExecutionProvider"])
        out: np.ndarray = session.run(None, feed)[0]
        return out

    rows = (
        np.random.default_rng(7).standard_normal((256, example_models.FEATURES)).astype(np.float32)
    )
    embedding = run("embedder", {"input": rows})
    assert embedding.shape == (256, example_models.EMBEDDING)
    small = run("classifier-small", {"input": embedding}).max(axis=1)
    large = run("classifier-large", {"input": embedding}).max(axis=1)
    assert (small < 0.8).mean() > 0.9  # the cascade escalates almost always...
    assert (large >= 0.8).mean() > 0.8  # ...and the large model settles most requests
    probabilities = run("classifier-a", {"input": embedding})
    score = run("validator", {"probabilities": probabilities})
    np.testing.assert_allclose(score[:, 0], probabilities.max(axis=1), rtol=1e-6)


def test_build_models_script_writes_into_out(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "build_models.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}.onnx" for n in example_models.MODELS
    )
    assert len(result.stdout.splitlines()) == len(example_models.MODELS)


SHOWN = [ROOT / "README.md", *YAMLS]
"""Where a `modulemesh models build` command is shown to users."""


def shown_build_commands() -> list[tuple[str, str]]:
    """(file, command) for every backquoted `... modulemesh models build ...` in SHOWN."""
    found = []
    for path in SHOWN:
        text = " ".join(line.lstrip("# ") for line in path.read_text().splitlines())
        found += [
            (path.name, c) for c in re.findall(r"`([^`]*modulemesh models build[^`]*)`", text)
        ]
    return found


def test_every_example_and_the_readme_show_the_build_command() -> None:
    files = {name for name, _ in shown_build_commands()}
    assert files == {p.name for p in SHOWN}
    assert not [p for p in SHOWN if "python examples/build_models.py" in p.read_text()]


@pytest.mark.parametrize("command", sorted({c for _, c in shown_build_commands()}), ids=lambda c: c)
def test_shown_build_command_works_from_a_venv_that_is_not_activated(
    tmp_path: Path, command: str
) -> None:
    """Run as shown, from a copy of the repository's layout: `.venv/bin/modulemesh` is this
    test's own console script and nothing of the venv is on PATH."""
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    done = subprocess.run(
        shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "examples" / "models").iterdir()) == sorted(
        f"{n}.onnx" for n in example_models.MODELS
    )
