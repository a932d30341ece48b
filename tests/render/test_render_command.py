"""``modulemesh render``: exit codes, every error at once, YAML on stdout, flags applied."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modulemesh.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

GRAPH = """\
apiVersion: modulemesh.io/v1alpha1
kind: ModuleGraph
metadata: {name: g}
spec:
  gates: [phi]
  modules:
    - {name: m, model: {path: m.onnx}, clearance: [phi], region: eu-west, resources: {gpu: 1}}
  routing:
    entry: main
    nodes: [{name: main, type: sequence, steps: [{module: m}]}]
"""

GATE = """\
apiVersion: modulemesh.io/v1alpha1
kind: PrivacyGate
metadata: {name: phi}
spec:
  tags: [{name: phi, allowedRegions: [eu-west]}]
"""

BROKEN = """\
apiVersion: modulemesh.io/v1alpha1
kind: ModuleGraph
metadata: {name: bad}
spec:
  modules:
    - {name: m, model: {path: m.onnx}, fallback: nowhere}
  routing:
    entry: mian
    nodes: [{name: main, type: sequence, steps: [{module: n}]}]
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_renders_graph_with_gates_as_yaml_stream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["render", write(tmp_path, "g.yaml", GRAPH), "-f", write(tmp_path, "gate.yaml", GATE)]
    )
    out = capsys.readouterr().out
    assert code == 0
    objects = list(yaml.safe_load_all(out))
    assert [o["kind"] for o in objects] == [
        "ConfigMap",
        "Service",
        "Service",
        "NetworkPolicy",
        "Deployment",
        "Deployment",
    ]
    assert out.startswith("---\n") and "&id" not in out  # no YAML anchors for kubectl users
    pod = objects[4]["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["eu-west"]


def test_flags_set_namespace_gpu_resource_and_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "render", write(tmp_path, "g.yaml", GRAPH + "---\n" + GATE),
            "--namespace", "prod", "--gpu-resource", "amd.com/gpu",
            "--image-runtime-gpu", "r/gpu:1", "--image-sidecar", "r/slim:1",
            "--image-router", "r/router:1", "--image-pull-policy", "Always",
            "--cluster-domain", "corp", "--sidecar-cpu", "750m", "--sidecar-memory", "200Mi",
            "--sidecar-memory-limit", "400Mi",
        ]
    )  # fmt: skip
    assert code == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    assert {o["metadata"]["namespace"] for o in objects} == {"prod"}
    module = next(
        o for o in objects if o["metadata"]["name"] == "g-m" and o["kind"] == "Deployment"
    )
    runtime, sidecar = module["spec"]["template"]["spec"]["containers"]
    assert runtime["resources"]["limits"]["amd.com/gpu"] == 1
    assert (runtime["image"], sidecar["image"]) == ("r/gpu:1", "r/slim:1")
    assert {runtime["imagePullPolicy"], sidecar["imagePullPolicy"]} == {"Always"}
    assert sidecar["resources"] == {
        "requests": {"cpu": "750m", "memory": "200Mi"},
        "limits": {"memory": "400Mi"},
    }
    router = next(
        o for o in objects if o["metadata"]["name"] == "g-router" and o["kind"] == "Deployment"
    )
    assert router["spec"]["template"]["spec"]["containers"][0]["image"] == "r/router:1"
    resolved = yaml.safe_load(objects[0]["data"]["resolved.json"])
    assert resolved["endpoints"]["m"] == "http://g-m.prod.svc.corp:8080"
    assert set(resolved["gates"]) == {"phi"}  # the gate moved into the namespace with the graph


def test_a_bad_sidecar_quantity_is_a_usage_error_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "g.yaml", GRAPH + "---\n" + GATE)
    with pytest.raises(SystemExit) as exit_:
        main(["render", path, "--sidecar-memory", "lots"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--sidecar-memory: 'lots' is not a memory quantity" in err


def test_invalid_graph_exits_1_with_every_error_and_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["render", write(tmp_path, "bad.yaml", BROKEN)])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    for field in (
        "spec.routing.entry",
        "spec.modules[0].fallback",
        "spec.routing.nodes[0].steps[0]",
    ):
        assert field in captured.err
    assert "nothing rendered" in captured.err


def test_missing_gate_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", write(tmp_path, "g.yaml", GRAPH)]) == 1
    assert "phi" in capsys.readouterr().err


def test_schema_error_and_no_graph_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", write(tmp_path, "x.yaml", GRAPH.replace("entry:", "entrypoint:"))]) == 1
    assert "entrypoint" in capsys.readouterr().err
    assert main(["render", write(tmp_path, "gate.yaml", GATE)]) == 1
    assert "no ModuleGraph" in capsys.readouterr().err


def test_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read file" in capsys.readouterr().err


def test_console_script_renders_the_quickstart() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modulemesh", "render", str(EXAMPLES / "quickstart.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kinds = [o["kind"] for o in yaml.safe_load_all(result.stdout)]
    assert kinds.count("Deployment") == 3 and kinds[0] == "ConfigMap"


def test_the_graph_file_also_given_as_gates_is_read_once(tmp_path: Path) -> None:
    both = write(tmp_path, "both.yaml", GRAPH + "---\n" + GATE)
    done = subprocess.run(
        [sys.executable, "-m", "modulemesh", "render", both, "-f", both],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    kinds = [o["kind"] for o in yaml.safe_load_all(done.stdout)]
    assert kinds.count("Deployment") == 2  # one module and the router, once
