"""``modulemesh run`` starts each runtime as the operator's pods do for the GPU fallback: a
module with GPUs and ``cpuFallback: Refuse`` gets ``--cpu-fallback=refuse``, so on a machine
without CUDA it stays not ready instead of serving on the CPU. The command lines are parsed
with the runtime's own parser, so a flag it does not accept fails here."""

from __future__ import annotations

import argparse
from pathlib import Path

from modulemesh.api.graph import ModuleGraph
from modulemesh.localmesh.plan import plan_mesh
from modulemesh.runtime.config import RuntimeConfig, add_arguments, from_args


def runtime_config(args: list[str]) -> RuntimeConfig:
    assert args[1:4] == ["-m", "modulemesh", "runtime"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(args[4:]))


def test_a_gpu_module_refusing_the_cpu_fallback_refuses_it_locally(tmp_path: Path) -> None:
    modules = [
        {"name": "strict", "resources": {"gpu": 1}, "cpuFallback": "Refuse"},
        {"name": "lenient", "resources": {"gpu": 1}},
        {"name": "cpu", "cpuFallback": "Refuse"},  # nothing to fall back from
    ]
    graph = ModuleGraph.model_validate(
        {"apiVersion": "modulemesh.io/v1alpha1", "kind": "ModuleGraph", "metadata": {"name": "g"},
         "spec": {"modules": [{**m, "model": {"path": f"{m['name']}.onnx"}} for m in modules],
                  "routing": {"entry": "main",
                              "nodes": [{"name": "main", "type": "sequence",
                                         "steps": [{"module": m["name"]} for m in modules]}]}}}
    )  # fmt: skip
    plan = plan_mesh(graph, [], tmp_path)
    fallback = {m.name: runtime_config(m.runtime_args).cpu_fallback for m in plan.modules}
    assert fallback == {"strict": "refuse", "lenient": "allow", "cpu": "allow"}


def test_each_runtime_gets_its_modules_batch_delay(tmp_path: Path) -> None:
    modules = [
        {"name": "default"},
        {"name": "fixed", "batching": {"adaptive": False, "maxDelayMs": 2}},
        {"name": "never", "batching": {"maxDelayMs": 0}},
    ]
    graph = ModuleGraph.model_validate(
        {"apiVersion": "modulemesh.io/v1alpha1", "kind": "ModuleGraph", "metadata": {"name": "g"},
         "spec": {"modules": [{**m, "model": {"path": f"{m['name']}.onnx"}} for m in modules],
                  "routing": {"entry": "main",
                              "nodes": [{"name": "main", "type": "sequence",
                                         "steps": [{"module": m["name"]} for m in modules]}]}}}
    )  # fmt: skip
    configs = {
        m.name: runtime_config(m.runtime_args) for m in plan_mesh(graph, [], tmp_path).modules
    }
    delays = {name: (c.adaptive_delay, c.max_delay_ms) for name, c in configs.items()}
    assert delays == {"default": (True, 1.0), "fixed": (False, 2.0), "never": (True, 0.0)}
