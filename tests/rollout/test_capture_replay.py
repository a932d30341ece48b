"""Capture and replay (issue 16, point 4) on real local meshes: a graph with spec.capture
writes the sample its trace ids select, never a request with a tag its gate does not mark
capturable (nor a tag no gate defines); `modulemesh replay` of that capture against the same
graph reports zero differences, and against a graph with another model the differences that
onnxruntime computes for the same inputs; the capture's bounds hold; bad files are named."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest

from modulemesh import zoo
from modulemesh.api.gate import PrivacyGate
from modulemesh.api.graph import CapturePolicy, ModuleGraph
from modulemesh.api.resolved import ResolvedGraph
from modulemesh.localmesh.plan import free_port, plan_mesh
from modulemesh.localmesh.supervisor import Mesh
from modulemesh.rollout.capture import Capture
from modulemesh.rollout.controller import bucket

GATE = PrivacyGate.model_validate({
    "apiVersion": "modulemesh.io/v1alpha1", "kind": "PrivacyGate",
    "metadata": {"name": "data"},
    "spec": {"tags": [{"name": "phi"}, {"name": "internal", "capturable": True}]},
})  # fmt: skip


def _graph(name: str, model: Path, capture: Path | None) -> ModuleGraph:
    spec: dict[str, Any] = {
        "modules": [{"name": "clf", "model": {"path": str(model)},
                     "clearance": ["phi", "internal", "xyz"]}],
        "routing": {"entry": "main", "nodes": [
            {"name": "main", "type": "sequence", "steps": [{"module": "clf"}]}]},
        "gates": ["data"],
    }  # fmt: skip
    if capture is not None:
        spec["capture"] = {"rate": 0.5, "path": capture.name}
    return ModuleGraph.model_validate({
        "apiVersion": "modulemesh.io/v1alpha1", "kind": "ModuleGraph",
        "metadata": {"name": name}, "spec": spec,
    })  # fmt: skip


def _start(graph: ModuleGraph, base: Path) -> Mesh:
    mesh = Mesh(plan_mesh(graph, [GATE], base, router_port=free_port()), log_dir=base / "logs")
    mesh.start(ready_timeout=120)
    return mesh


def _url(mesh: Mesh) -> str:
    return (
        f"http://127.0.0.1:{mesh.plan.router_port}/v2/models/{mesh.plan.graph.metadata.name}/infer"
    )


def _send(url: str, n: int, first: int, tags: str | None = None) -> list[str]:
    """``n`` requests with trace ids first.. (and ``tags``); returns the trace ids."""
    rng = np.random.default_rng(first)
    ids = []
    with httpx.Client(timeout=30) as client:
        for i in range(first, first + n):
            trace = f"{i:032x}"
            headers = {"traceparent": f"00-{trace}-{1:016x}-01"}
            if tags:
                headers["x-modulemesh-tags"] = tags
            data = rng.normal(0, 1, (2, 8)).astype(np.float32)
            body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 8],
                                "data": data.ravel().tolist()}]}  # fmt: skip
            response = client.post(url, json=body, headers=headers)
            assert response.status_code == 200, response.text
            ids.append(trace)
    return ids


def _sampled(ids: list[str]) -> list[str]:
    return [t for t in ids if bucket("capture", t) < 50.0]


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A capturing graph that got untagged, phi, internal and xyz-tagged requests."""
    base = tmp_path_factory.mktemp("capture")
    stable = zoo.save(zoo.classifier(features=8, classes=3, seed=1), base / "v1.onnx")
    mesh = _start(_graph("cap", stable, base / "capture.jsonl"), base)
    twin: Mesh | None = None
    try:
        # The same graph without capture (replaying into the capturing one captures again).
        twin = _start(_graph("cap", stable, None), base)
        url = _url(mesh)
        sent = {
            "": _send(url, 80, 1),  # trace id 0 is not a valid one
            "phi": _send(url, 30, 1000, "phi"),
            "internal": _send(url, 30, 2000, "internal"),
            "xyz": _send(url, 20, 3000, "xyz"),
        }
        shown = ["curl", "-s", f"http://127.0.0.1:{mesh.plan.router_port}/capture"]  # as documented
        status = json.loads(
            subprocess.run(shown, capture_output=True, timeout=10, check=True).stdout
        )
        yield {"base": base, "mesh": mesh, "url": url, "sent": sent, "status": status,
               "file": base / "capture.jsonl", "model": stable, "twin": _url(twin)}  # fmt: skip
    finally:
        if twin is not None:
            twin.stop()
        mesh.stop()


def _records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


# -- capture --------------------------------------------------------------------------------


def test_the_sample_is_the_trace_ids_below_the_rate(captured: dict[str, Any]) -> None:
    records = _records(captured["file"])
    expected = _sampled(captured["sent"][""]) + _sampled(captured["sent"]["internal"])
    assert [r["traceId"] for r in records] == expected
    assert 20 < len(expected) < 90
    first = records[0]
    assert first["format"] == "modulemesh.capture/v1" and first["module"] == "clf"
    assert first["request"]["inputs"][0]["shape"] == [2, 8]
    assert first["outputs"][0]["name"] == "probabilities"


def test_tags_the_gate_does_not_allow_are_never_captured(captured: dict[str, Any]) -> None:
    records = _records(captured["file"])
    assert {tuple(r["tags"]) for r in records} == {(), ("internal",)}
    sampled_refused = _sampled(captured["sent"]["phi"]) + _sampled(captured["sent"]["xyz"])
    assert sampled_refused, "some tagged requests were in the sample"
    status = captured["status"]["capture"]
    assert status["captured"] == len(records)
    assert status["skipped"]["tagged"] == len(sampled_refused)
    assert status["path"] == str(captured["file"])  # relative to the graph, as models are


def test_the_capture_stops_at_its_bounds(tmp_path: Path) -> None:
    class Answer:
        def __init__(self) -> None:
            self.module = "clf"
            self.tensors = {"p": np.full((1, 3), 0.5, dtype=np.float32)}

    def capture(**bounds: int) -> Capture:
        policy = CapturePolicy.model_validate({"rate": 1, "path": str(tmp_path / "c.jsonl"),
                                               **bounds})  # fmt: skip
        (tmp_path / "c.jsonl").unlink(missing_ok=True)
        spec = _graph("g", tmp_path / "m.onnx", None).spec.model_copy(update={"capture": policy})
        made = Capture.of(ResolvedGraph(name="g", spec=spec))
        assert made is not None
        return made

    small = {"x": np.zeros((1, 8), dtype=np.float32)}
    big = {"x": np.zeros((1, 4000), dtype=np.float32)}
    c = capture(maxRequests=3)
    assert [c.offer(f"{i:032x}", frozenset(), small, {}, Answer()) for i in range(5)] == [
        True, True, True, False, False,
    ]  # fmt: skip
    assert c.skipped["full"] == 2 and len(_records(tmp_path / "c.jsonl")) == 3
    c = capture(maxRecordBytes=4096)
    assert not c.offer("1" * 32, frozenset(), big, {}, Answer())
    assert c.offer("2" * 32, frozenset(), small, {}, Answer())
    assert c.skipped["tooLarge"] == 1
    c = capture(maxBytes=1024)
    written = [c.offer(f"{i:032x}", frozenset(), small, {}, Answer()) for i in range(10)]
    assert 0 < written.count(True) < 10 and c.size <= 1024
    assert (tmp_path / "c.jsonl").stat().st_size == c.size


def test_hostname_in_the_path_gives_each_router_its_own_file(tmp_path: Path) -> None:
    policy = CapturePolicy.model_validate({"rate": 1, "path": str(tmp_path / "c-{hostname}.jsonl")})
    spec = _graph("g", tmp_path / "m.onnx", None).spec.model_copy(update={"capture": policy})
    made = Capture.of(ResolvedGraph(name="g", spec=spec))
    assert made is not None and made.path == tmp_path / f"c-{socket.gethostname()}.jsonl"


# -- replay ---------------------------------------------------------------------------------


def _replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modulemesh", "replay", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_replay_against_the_same_graph_reports_no_difference(captured: dict[str, Any]) -> None:
    n = len(_records(captured["file"]))
    done = _replay(str(captured["file"]), "--to", captured["twin"])
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"replayed {n} request(s) against {captured['twin']}: {n} answered, 0 failed"
    assert lines[2].split() == ["clf", "probabilities", str(n), "0", "1.0000"]
    report = json.loads(_replay(str(captured["file"]), "--to", captured["twin"], "--json").stdout)
    assert report["outputs"] == [{"module": "clf", "output": "probabilities", "compared": n,
                                  "maxAbsError": 0.0, "agreement": 1.0, "mismatched": 0}]  # fmt: skip


def test_replay_against_a_changed_model_measures_the_differences(
    captured: dict[str, Any], tmp_path: Path
) -> None:
    changed = zoo.save(zoo.classifier(features=8, classes=3, seed=2), tmp_path / "v2.onnx")
    mesh = _start(_graph("cap", changed, None), tmp_path)
    try:
        url = _url(mesh)
        done = _replay(str(captured["file"]), "--to", url, "--json")
        assert done.returncode == 0, done.stderr
        (row,) = json.loads(done.stdout)["outputs"]
        failing = _replay(str(captured["file"]), "--to", url, "--max-error", "0.001")
        assert failing.returncode == 1
    finally:
        mesh.stop()
    # The same requests through onnxruntime, both models: the differences the report states.
    old = ort.InferenceSession(str(captured["model"]))
    new = ort.InferenceSession(str(changed))
    errors, agreed = [], 0
    records = _records(captured["file"])
    for record in records:
        tensor = record["request"]["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        a, b = old.run(None, {"input": x})[0], new.run(None, {"input": x})[0]
        errors.append(float(np.max(np.abs(a - b))))
        agreed += bool(np.array_equal(a.argmax(-1), b.argmax(-1)))
    assert row["compared"] == len(records) and row["mismatched"] == 0
    assert row["maxAbsError"] == pytest.approx(max(errors), abs=1e-6) and max(errors) > 0.01
    assert row["agreement"] == pytest.approx(agreed / len(records))
    assert row["agreement"] < 1.0


def test_replay_names_a_bad_capture_and_a_missing_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "modulemesh.capture/v1", "request": {}, "outputs": []}\nnot json\n')
    done = _replay(str(bad), "--to", "http://127.0.0.1:9/v2/models/g/infer")
    assert done.returncode == 2
    assert f"{bad}:1: record has no 'module'" in done.stderr
    done = _replay(str(tmp_path / "none.jsonl"), "--to", "http://127.0.0.1:9/x")
    assert done.returncode == 2 and "none.jsonl: cannot read: No such file" in done.stderr
    done = _replay(str(bad), "--to", "x", "--atol", "-1")
    assert done.returncode == 2 and "--atol: must be a number of at least 0" in done.stderr
