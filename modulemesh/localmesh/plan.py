"""What ``modulemesh run`` will start: data computed from the graph, its gates and ports.

Each runtime listens on an owner-only Unix socket in a private (0700) directory, never on a
TCP port, and its sidecar forwards to that socket: nothing but the sidecar can call the
runtime. Model paths resolve against the graph file's directory. Missing models that the example
model builder knows (``examples/models/*.onnx``) are reported so the caller can build them;
any other missing model is an error naming the module, the path and how to fix it.
"""

from __future__ import annotations

import functools
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from modulemesh.api.gate import GateMode, PrivacyGate
from modulemesh.api.graph import CpuFallback, Module, ModuleGraph
from modulemesh.api.resolved import sidecar_gates_json

__all__ = ["MeshPlan", "ModulePlan", "PlanError", "free_port", "plan_mesh"]

HOST = "127.0.0.1"
_MAX_SOCKET_PATH = 107
"""Longest Unix socket path Linux accepts (``sun_path`` is 108 bytes with its NUL)."""


class PlanError(ValueError):
    """The graph cannot run locally; the message says which module and why."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ModulePlan:
    """One module: its runtime and sidecar command lines, the runtime's socket, the sidecar's
    port."""

    name: str
    model: Path
    runtime_socket: Path
    sidecar_port: int
    runtime_args: list[str]
    sidecar_args: list[str]
    sidecar_grpc_port: int = 0
    """The sidecar's gRPC port (relaying to the runtime's gRPC socket, next to its HTTP one)."""
    canary_of: str | None = field(default=None, kw_only=True)
    """For ``<module>@canary``, the processes of a module's canary: the module's name (the
    runtime serves the model under it). None for a module's own version."""

    @property
    def url(self) -> str:
        """The sidecar's base URL (what the router calls)."""
        return f"http://{HOST}:{self.sidecar_port}"


@dataclass(frozen=True)
class MeshPlan:
    """Everything to start, in order: module runtimes and sidecars, then the router."""

    graph: ModuleGraph
    gates: list[PrivacyGate]
    modules: list[ModulePlan]
    router_port: int
    missing_models: list[Path] = field(default_factory=list)
    socket_dir: Path | None = None
    """The private directory holding the runtimes' sockets (removed when the mesh stops)."""
    router_grpc_port: int = 0
    """The router's OIP v2 gRPC port (0: none)."""

    @property
    def endpoint(self) -> str:
        """The graph's infer URL."""
        return f"http://{HOST}:{self.router_port}/v2/models/{self.graph.metadata.name}/infer"


def _model_path(module: Module, base: Path) -> Path:
    source = module.model
    if source.path is not None:
        path = Path(source.path)
    elif source.uri is not None and source.uri.startswith("file://"):
        path = Path(source.uri.removeprefix("file://"))
    else:
        kind = "an https:// uri" if source.uri else "a ConfigMap" if source.config_map else "a PVC"
        raise PlanError(
            f"module {module.name!r}: its model comes from {kind}; `modulemesh run` needs a "
            "local path (spec.modules[].model.path) or a file:// uri"
        )
    return path if path.is_absolute() else (base / path).resolve()


def plan_mesh(
    graph: ModuleGraph,
    gates: Iterable[PrivacyGate],
    base: Path,
    *,
    router_port: int = 8080,
    router_grpc_port: int | None = None,
    port: Callable[[], int] = free_port,
    python: str = sys.executable,
    socket_dir: Path | None = None,
) -> MeshPlan:
    """Command lines for every process of ``graph`` (sidecar ports, and the router's gRPC port
    unless given, from ``port``; runtime sockets in ``socket_dir``, by default a new private
    temporary directory)."""
    capture = graph.spec.capture
    if capture is not None and not Path(capture.path).is_absolute():
        # The router appends to it: relative to the graph file, as model paths are.
        where = capture.model_copy(update={"path": str((base / capture.path).resolve())})
        graph = graph.model_copy(update={"spec": graph.spec.model_copy(update={"capture": where})})
    named = {g.metadata.name: g for g in gates}
    used = [named[n] for n in graph.spec.gates if n in named]
    dryrun = bool(used) and all(g.spec.mode is GateMode.DRYRUN for g in used)
    classifying = sidecar_gates_json(used)
    sockets = socket_dir or Path(tempfile.mkdtemp(prefix="modulemesh-run-"))  # mode 0700
    try:
        modules, missing = _plan_modules(graph, base, sockets, dryrun, classifying, port, python)
        modules = _with_canaries(graph, modules, missing, base, sockets, port)
    except PlanError:
        if socket_dir is None:
            shutil.rmtree(sockets, ignore_errors=True)
        raise
    grpc_port = port() if router_grpc_port is None else router_grpc_port
    return MeshPlan(graph, used, modules, router_port, missing, sockets, grpc_port)


def _plan_modules(
    graph: ModuleGraph,
    base: Path,
    sockets: Path,
    dryrun: bool,
    classifying: str | None,
    port: Callable[[], int],
    python: str,
) -> tuple[list[ModulePlan], list[Path]]:
    base_cmd = [python, "-m", "modulemesh"]
    modules: list[ModulePlan] = []
    missing: list[Path] = []
    for module in graph.spec.modules:
        model = _model_path(module, base)
        if not model.exists():
            missing.append(model)
        runtime_socket, sidecar_port = sockets / f"{module.name}.sock", port()
        grpc_socket, grpc_port = sockets / f"{module.name}.grpc.sock", port()
        for path in (runtime_socket, grpc_socket):
            if len(str(path).encode()) > _MAX_SOCKET_PATH:
                raise PlanError(
                    f"module {module.name!r}: its runtime socket path {path} is longer than "
                    f"{_MAX_SOCKET_PATH} bytes; set TMPDIR to a shorter directory"
                )
        b = module.batching
        runtime_args = [
            *base_cmd, "runtime", "--model", str(model), "--name", module.name,
            "--model-version", module.version, "--uds", str(runtime_socket),
            "--max-batch-size", str(b.max_batch_size), "--max-delay-ms", str(b.max_delay_ms),
            "--max-queue", str(b.max_queue),
            "--adaptive-delay" if b.adaptive else "--no-adaptive-delay",
            "--grpc-uds", str(grpc_socket),
        ]  # fmt: skip
        if module.resources.gpu > 0 and module.cpu_fallback is CpuFallback.REFUSE:
            runtime_args.append("--cpu-fallback=refuse")  # as in a cluster
        h = module.health
        sidecar_args = [
            *base_cmd, "sidecar", "--module", module.name,
            "--upstream", f"unix:{runtime_socket}", "--host", HOST,
            "--port", str(sidecar_port), "--clearance", ",".join(module.clearance),
            "--mode", "dryrun" if dryrun else "enforce", "--model-version", module.version,
            "--degraded-error-rate", str(h.degraded_error_rate),
            "--unhealthy-error-rate", str(h.unhealthy_error_rate), "--poll-interval", "0.5",
            "--grpc-port", str(grpc_port), "--grpc-upstream", f"unix:{grpc_socket}",
        ]  # fmt: skip
        for percentile, objective in (
            ("p50", h.degraded_p50_ms),
            ("p95", h.degraded_p95_ms),
            ("p99", h.degraded_p99_ms),
        ):
            if objective is not None:
                sidecar_args += [f"--degraded-{percentile}-ms", str(objective)]
        if module.confidence_output is not None:
            sidecar_args += ["--confidence-output", module.confidence_output]
        if classifying is not None:  # tags derived as the router derives them
            sidecar_args += ["--gates", classifying]
        modules.append(
            ModulePlan(
                module.name, model, runtime_socket, sidecar_port, runtime_args, sidecar_args,
                grpc_port,
            )
        )  # fmt: skip
    return modules, missing


CANARY_SUFFIX = "@canary"
"""A canary's processes are ``<module>@canary`` (``@`` is in no module name)."""


def _with_canaries(
    graph: ModuleGraph,
    modules: list[ModulePlan],
    missing: list[Path],
    base: Path,
    sockets: Path,
    port: Callable[[], int],
) -> list[ModulePlan]:
    """``modules`` with, after each module that declares a canary, the canary's processes:
    the module's command lines with the canary's model and version, its own sockets (named
    ``<module>@canary.*``) and its own ports (a new one for each ``--*port`` flag)."""
    out: list[ModulePlan] = []
    for plan in modules:
        out.append(plan)
        module = graph.spec.module(plan.name)
        if module is None or module.canary is None:
            continue
        model = _model_path(module.model_copy(update={"model": module.canary.model}), base)
        if not model.exists():
            missing.append(model)
        name = module.name + CANARY_SUFFIX
        stable_prefix, canary_prefix = f"{sockets / module.name}.", f"{sockets / name}."
        ports: dict[str, str] = {}
        convert = functools.partial(
            _convert_args, model=model, version=module.canary.version, ports=ports,
            port=port, prefixes=(stable_prefix, canary_prefix),
        )  # fmt: skip
        runtime_args, sidecar_args = convert(plan.runtime_args), convert(plan.sidecar_args)
        socket = Path(str(plan.runtime_socket).replace(stable_prefix, canary_prefix))
        for arg in runtime_args + sidecar_args:
            path = arg.removeprefix("unix:")
            if path.startswith(canary_prefix) and len(path.encode()) > _MAX_SOCKET_PATH:
                raise PlanError(
                    f"module {module.name!r}: its canary's runtime socket path {path} is longer "
                    f"than {_MAX_SOCKET_PATH} bytes; set TMPDIR to a shorter directory"
                )
        renumbered = {
            f.name: int(ports[str(value)])
            for f in fields(plan)
            if isinstance(value := getattr(plan, f.name), int) and str(value) in ports
        }
        out.append(
            replace(
                plan, name=name, model=model, runtime_socket=socket,
                runtime_args=runtime_args, sidecar_args=sidecar_args, canary_of=module.name,
                **renumbered,
            )
        )  # fmt: skip
    return out


def _convert_args(
    args: list[str],
    *,
    model: Path,
    version: str,
    ports: dict[str, str],
    port: Callable[[], int],
    prefixes: tuple[str, str],
) -> list[str]:
    """A stable version's command line made the canary's: its model and version, each
    ``--*port`` value a new port (the same new one wherever the old one recurs), socket paths
    under the canary's prefix."""
    converted: list[str] = []
    for i, arg in enumerate(args):
        flag = args[i - 1] if i else ""
        if flag == "--model":
            arg = str(model)
        elif flag == "--model-version":
            arg = version
        elif flag.startswith("--") and flag.endswith("port"):
            arg = ports.setdefault(arg, str(port()))
        else:
            arg = arg.replace(*prefixes)
        converted.append(arg)
    return converted
