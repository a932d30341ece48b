"""The ``modulemesh run`` flow: load, validate, plan, build models, start, wait, stop.

A child that dies while the mesh runs is restarted with a growing back-off (capped at 30 s,
reset once it stays up), so a crashed runtime comes back on its own, as it would under a
Deployment; a router that keeps failing to start ends the run with exit code 1.
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from modulemesh.api.errors import Severity
from modulemesh.api.graph import ModuleGraph
from modulemesh.api.loader import load_files
from modulemesh.api.validation import validate_graph
from modulemesh.cli import invocation
from modulemesh.localmesh.plan import MeshPlan, PlanError, free_port, plan_mesh
from modulemesh.localmesh.supervisor import Mesh, MeshError, _get

__all__ = ["build_missing", "run_mesh"]


def _say(text: str) -> None:
    print(text, flush=True)


def build_missing(plan: MeshPlan) -> list[str]:
    """Build missing models that are example models in an ``examples/models`` directory.

    Returns the problems left: one line per model that is still missing, saying how to fix it.
    """
    from modulemesh import example_models

    problems: list[str] = []
    by_dir: dict[Path, dict[str, None]] = {}  # ordered sets: modules may share a model file
    for path in plan.missing_models:
        buildable = example_models.missing([path])
        if buildable and (path.parent.parent / "build_models.py").exists():
            by_dir.setdefault(path.parent, {}).update(dict.fromkeys(buildable))
        else:
            owner = next(m.name for m in plan.modules if m.model == path)
            problems.append(f"module {owner!r}: model file {path} does not exist")
    for directory, stems in by_dir.items():
        for written in example_models.build(directory, stems):
            _say(f"built example model {written}")
    return problems


def _missing_hints(missing: list[Path]) -> list[str]:
    """What to do about model files still missing: a command that builds the example ones,
    spelled the way this process was started so it works from a virtualenv that is not
    activated, and the path rule for the rest."""
    from modulemesh import example_models

    directories = sorted({p.parent for p in missing if example_models.missing([p])})
    hints = [
        f"build the example models with `{invocation()} models build {shlex.quote(str(d))}`"
        for d in directories
    ]
    return [
        *hints,
        "or fix spec.modules[].model.path (relative paths resolve against the graph file)"
        if hints
        else "fix spec.modules[].model.path (relative paths resolve against the graph file)",
    ]


def run_mesh(
    graph_file: Path,
    gate_files: list[Path],
    *,
    port: int = 8080,
    ready_timeout: float = 90.0,
    log_dir: Path | None = None,
    echo: IO[str] | None = sys.stderr,
    build: bool = True,
) -> int:
    """Run one graph's mesh until SIGINT/SIGTERM; returns the exit code."""
    docs = load_files([graph_file, *gate_files])
    if docs.issues:
        for issue in docs.issues:
            print(f"modulemesh run: {issue}", file=sys.stderr)
        return 2
    if len(docs.graphs) != 1:
        found = ", ".join(
            f"{g.metadata.name!r} in {docs.sources[f'ModuleGraph/{g.metadata.name}']}"
            for g in docs.graphs
        )
        where = f"{graph_file} and the -f/--gates files" if gate_files else str(graph_file)
        print(f"modulemesh run: expected one ModuleGraph in {where}, found "
              f"{len(docs.graphs)}{f': {found}' if found else ''}", file=sys.stderr)  # fmt: skip
        return 2
    graph = docs.graphs[0]
    issues = validate_graph(graph, docs.gates)
    errors = [i for i in issues if i.severity is Severity.ERROR]
    for issue in issues:
        print(f"modulemesh run: {issue}", file=sys.stderr)
    if errors:
        print(f"modulemesh run: refusing to run {graph.metadata.name!r}: {len(errors)} error(s)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        plan = plan_mesh(graph, docs.gates, graph_file.resolve().parent,
                         router_port=port or free_port())  # fmt: skip
    except PlanError as exc:
        print(f"modulemesh run: {exc}", file=sys.stderr)
        return 2
    problems = (
        build_missing(plan)
        if build
        else [f"model file {p} does not exist" for p in plan.missing_models]
    )
    if problems:
        for problem in problems:
            print(f"modulemesh run: {problem}", file=sys.stderr)
        for hint in _missing_hints([p for p in plan.missing_models if not p.exists()]):
            print(f"modulemesh run: {hint}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    mesh = Mesh(plan, log_dir=log_dir, echo=echo, say=_say)
    try:
        _say(f"starting {len(plan.modules)} module(s) of graph {graph.metadata.name!r} ...")
        try:
            mesh.start(ready_timeout)
        except MeshError as exc:
            print(f"modulemesh run: {exc}", file=sys.stderr)
            return 1
        _print_ready(mesh)
        try:
            mesh.supervise(stop)
        except MeshError as exc:
            print(f"modulemesh run: {exc}", file=sys.stderr)
            return 1
        _say("stopping ...")
        return 0
    finally:
        mesh.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def local_differences(graph: ModuleGraph, providers: Mapping[str, str]) -> list[str]:
    """What this run does differently from the cluster the graph describes, one line each,
    for the banner: GPU requests served without a GPU (``providers``: module -> execution
    provider its runtime reports) and replica counts run as one process."""
    lines = []
    for module in graph.spec.modules:
        provider = providers.get(module.name, "-")
        if module.resources.gpu > 0 and provider not in GPU_PROVIDERS:
            lines.append(
                f"runs {module.name!r} (gpu: {module.resources.gpu}) without a GPU, on {provider}"
            )
    for module in graph.spec.modules:
        if module.replicas != 1:
            lines.append(f"runs {module.name!r} (replicas: {module.replicas}) as one process")
    if graph.spec.router.replicas != 1:
        lines.append(f"runs the router (replicas: {graph.spec.router.replicas}) as one process")
    return lines


def _print_ready(mesh: Mesh) -> None:
    rows = mesh.table()
    header = ("MODULE", "PROVIDER", "RUNTIME", "SIDECAR", "STATE")
    cells = [header] + [
        (r["module"], str(r["provider"]), str(r["runtime"]), str(r["sidecar"]), str(r["state"]))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        _say("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    plan = mesh.plan
    differences = local_differences(plan.graph, {r["module"]: str(r["provider"]) for r in rows})
    if differences:
        _say("\nunlike a cluster, this local run:")
        for line in differences:
            _say(f"  - {line}")
    name = plan.graph.metadata.name
    base = f"http://127.0.0.1:{plan.router_port}/v2/models/{name}"
    _say(f"\ngraph {name!r} ready: {plan.endpoint}")
    if plan.router_grpc_port:
        _say(f"  gRPC:      127.0.0.1:{plan.router_grpc_port} (inference.GRPCInferenceService, "
             f"model {name!r})")  # fmt: skip
    _say(f"  metadata:  curl -s {base}")
    _say(f"  envelopes: curl -s http://127.0.0.1:{plan.router_port}/envelopes")
    for canary in (m for m in plan.modules if m.canary_of is not None):
        _say(f"  rollout:   module {canary.canary_of!r} canary rolling out; "
             f"curl -s http://127.0.0.1:{plan.router_port}/rollouts")  # fmt: skip
    status, metadata = _get(base, timeout=5.0)
    inputs = metadata.get("inputs", []) if status == 200 and isinstance(metadata, dict) else []
    if inputs:
        tensors = []
        for t in inputs:
            width = t.get("shape", [-1])[-1]
            width = width if isinstance(width, int) and width > 0 else 1
            tensors.append({"name": t["name"], "datatype": t["datatype"], "shape": [1, width],
                            "data": [0.5] * width})  # fmt: skip
        body = json.dumps({"inputs": tensors}, separators=(",", ":"))
        _say(
            f"  curl:      curl -s -X POST {plan.endpoint} -H 'x-modulemesh-explain: 1' -d '{body}'"
        )
        values = ",".join(["0.5"] * tensors[0]["shape"][1])
        _say(
            f"  infer:     {invocation()} infer {base} --input {tensors[0]['name']}={values} "
            "--explain"
        )
    _say("Ctrl-C stops every process.")
