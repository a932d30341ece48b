"""``modulemesh run`` hands each sidecar the graph's classifying gates, as the operator does, so
a sidecar called directly tags requests exactly as the router does. The sidecar command lines
are parsed with the sidecar's own parser, so a flag it does not accept fails here; and a mesh
started from the plan (real runtime and sidecar on loopback) refuses a direct call that only
carries the classifier header."""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from modulemesh import zoo
from modulemesh.api.gate import PrivacyGate
from modulemesh.api.graph import ModuleGraph
from modulemesh.api.resolved import resolve
from modulemesh.localmesh.plan import plan_mesh
from modulemesh.localmesh.supervisor import Mesh
from modulemesh.privacy import Classifier
from modulemesh.sidecar import command as sidecar_command
from modulemesh.sidecar.config import SidecarConfig


def sidecar_config(args: list[str]) -> SidecarConfig:
    assert args[1:4] == ["-m", "modulemesh", "sidecar"]
    parser = argparse.ArgumentParser()
    sidecar_command.configure(parser)
    return sidecar_command.build_config(parser.parse_args(args[4:]))


def graph(gates: list[str]) -> ModuleGraph:
    return ModuleGraph.model_validate(
        {"apiVersion": "modulemesh.io/v1alpha1", "kind": "ModuleGraph", "metadata": {"name": "g"},
         "spec": {"modules": [{"name": "m", "model": {"path": "m.onnx"}}], "gates": gates,
                  "routing": {"entry": "main",
                              "nodes": [{"name": "main", "type": "sequence",
                                         "steps": [{"module": "m"}]}]}}}
    )  # fmt: skip


def gate(name: str, tag: dict[str, object]) -> PrivacyGate:
    return PrivacyGate.model_validate(
        {"apiVersion": "modulemesh.io/v1alpha1", "kind": "PrivacyGate",
         "metadata": {"name": name}, "spec": {"tags": [tag]}}
    )  # fmt: skip


def test_sidecars_get_the_graphs_classifying_gates(tmp_path: Path) -> None:
    phi = gate("phi", {"name": "phi", "classifiers": [{"header": "x-data-class"}]})
    unused = gate("other", {"name": "other", "classifiers": [{"header": "x-other"}]})
    gates = [phi, unused, gate("plain", {"name": "pii"})]
    g = graph(["phi", "plain"])
    plan = plan_mesh(g, gates, tmp_path, port=iter(range(20000, 20010)).__next__)
    (module,) = plan.modules
    config = sidecar_config(module.sidecar_args)
    assert list(config.gates) == ["phi"]
    router_side = Classifier.from_gates(resolve(g, gates, {}).gates.values())
    sidecar_side = Classifier.from_gates(config.gates.values())
    for fields in ({"x-data-class": ""}, {"x-other": "1"}, {}):
        assert router_side.classify(fields) == sidecar_side.classify(fields)
    bare = plan_mesh(graph([]), gates, tmp_path, port=iter(range(20010, 20020)).__next__)
    assert "--gates" not in bare.modules[0].sidecar_args


def test_a_planned_sidecar_refuses_a_direct_call_carrying_only_the_classifier(
    tmp_path: Path,
) -> None:
    zoo.save(zoo.classifier(features=8, classes=3), tmp_path / "m.onnx")
    phi = gate(
        "phi", {"name": "phi", "classifiers": [{"header": "x-data-class", "values": ["phi"]}]}
    )
    mesh = Mesh(plan_mesh(graph(["phi"]), [phi], tmp_path), log_dir=tmp_path / "logs")
    try:
        mesh.start_module("m")
        mesh.wait_module("m", time.monotonic() + 60)
        url = f"{mesh.plan.modules[0].url}/v2/models/m/infer"
        body = json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}
        ).encode()

        def status(headers: dict[str, str]) -> int:
            request = urllib.request.Request(
                url, body, {"content-type": "application/json", **headers}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert status({"x-data-class": "public"}) == 200
        assert status({"x-data-class": "PHI"}) == 403  # the module is not cleared for phi
    finally:
        mesh.stop()
