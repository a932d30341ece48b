"""Real processes for router tests: a session-wide pool of modules (runtime + sidecar each,
started with :mod:`modulemesh.localmesh`), and routers started per test module with
``modulemesh router`` over graphs that use those modules. Models come from
:mod:`modulemesh.zoo`; everything listens on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modulemesh import audit, zoo
from modulemesh.api.gate import PrivacyGate
from modulemesh.api.graph import ModuleGraph
from modulemesh.api.resolved import resolve
from modulemesh.localmesh.plan import free_port, plan_mesh
from modulemesh.localmesh.process import Child
from modulemesh.localmesh.supervisor import Mesh

# name -> (zoo builder, extra module spec used when the pool starts it)
POOL_MODELS: dict[str, tuple[Any, dict[str, Any]]] = {
    "embed": (lambda: zoo.embedder(features=16, dimensions=8), {}),
    "small": (lambda: zoo.classifier(features=8, classes=3, temperature=6.0, seed=1), {}),
    "large": (lambda: zoo.classifier(features=8, classes=3, temperature=0.1, seed=1), {}),
    "check": (lambda: zoo.validator(classes=3), {}),
    "eu": (
        lambda: zoo.classifier(features=8, classes=3, temperature=0.1, seed=1),
        {"clearance": ["phi", "pii"], "region": "eu-west"},
    ),
    "slow": (
        lambda: zoo.classifier(features=8, classes=3, seed=1),
        {"batching": {"maxBatchSize": 64, "maxDelayMs": 600, "adaptive": False}},
    ),
}

X8 = np.linspace(-1.0, 1.0, 8, dtype=np.float32).reshape(1, 8)
X16 = np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(1, 16)


def module_spec(name: str, model: Path, **extra: Any) -> dict[str, Any]:
    """A module entry of a graph spec."""
    return {"name": name, "model": {"path": str(model)}, **extra}


def make_graph(
    name: str,
    modules: list[dict[str, Any]],
    nodes: list[dict[str, Any]],
    *,
    entry: str = "main",
    policy: dict[str, Any] | None = None,
    gates: list[str] | None = None,
) -> ModuleGraph:
    """A ModuleGraph from plain dicts (camelCase, as in YAML)."""
    spec: dict[str, Any] = {"modules": modules, "routing": {"entry": entry, "nodes": nodes}}
    if policy:
        spec["policy"] = policy
    if gates:
        spec["gates"] = gates
    return ModuleGraph.model_validate(
        {"apiVersion": "modulemesh.io/v1alpha1", "kind": "ModuleGraph",
         "metadata": {"name": name}, "spec": spec}
    )  # fmt: skip


def make_gate(name: str, tags: list[dict[str, Any]], **spec: Any) -> PrivacyGate:
    """A PrivacyGate from plain dicts."""
    return PrivacyGate.model_validate(
        {"apiVersion": "modulemesh.io/v1alpha1", "kind": "PrivacyGate",
         "metadata": {"name": name}, "spec": {"tags": tags, **spec}}
    )  # fmt: skip


@dataclass
class Pool:
    """Running modules: their model files and sidecar URLs."""

    mesh: Mesh
    models: dict[str, Path]
    urls: dict[str, str] = field(default_factory=dict)

    def spec(self, name: str, **extra: Any) -> dict[str, Any]:
        """Module spec for a pooled module (the router-side view: clearance, fallback...)."""
        base = dict(POOL_MODELS[name][1]) if name in POOL_MODELS else {}
        base.pop("batching", None)
        return module_spec(name, self.models[name], **{**base, **extra})

    def envelope(self, name: str) -> dict[str, Any]:
        """The module's sidecar envelope, read directly."""
        data: dict[str, Any] = httpx.get(f"{self.urls[name]}/envelope", timeout=5).json()
        return data

    def audit(self, name: str) -> list[dict[str, Any]]:
        """Audit records in the module's sidecar output."""
        lines = self.mesh.modules[name].sidecar.lines
        return [r for line in list(lines) if (r := audit.parse_line(line))]


def start_pool(
    tmp: Path,
    models: dict[str, tuple[Any, dict[str, Any]]],
    *,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
) -> Pool:
    """Build the models and start a runtime + sidecar per module; wait until all are ready.

    ``env`` is added to every child's environment (e.g. ``OTEL_*``)."""
    paths = {name: zoo.save(build(), tmp / f"{name}.onnx") for name, (build, _) in models.items()}
    modules = [module_spec(name, paths[name], **extra) for name, (_, extra) in models.items()]
    graph = make_graph(
        "pool",
        modules,
        [{"name": "main", "type": "sequence", "steps": [{"module": modules[0]["name"]}]}],
    )
    plan = plan_mesh(graph, [], tmp, router_port=free_port())
    mesh = Mesh(plan, log_dir=tmp / "logs", env=env)
    try:
        for m in plan.modules:
            mesh.start_module(m.name)
        deadline = time.monotonic() + timeout
        for m in plan.modules:
            mesh.wait_module(m.name, deadline)
    except BaseException:
        mesh.stop()
        raise
    return Pool(mesh, paths, {m.name: m.url for m in plan.modules})


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """The session's shared modules."""
    p = start_pool(tmp_path_factory.mktemp("pool"), POOL_MODELS)
    yield p
    p.mesh.stop()


@dataclass
class Router:
    """A running ``modulemesh router`` process."""

    child: Child
    base: str
    graph: str

    @property
    def infer_url(self) -> str:
        return f"{self.base}/v2/models/{self.graph}/infer"

    def infer(
        self,
        inputs: dict[str, np.ndarray[Any, Any]] | None = None,
        *,
        headers: dict[str, str] | None = None,
        explain: bool = True,
        timeout: float = 30.0,
    ) -> httpx.Response:
        """POST a JSON infer request (``input`` = X8 unless given)."""
        tensors = [
            {"name": n, "datatype": "FP32", "shape": list(a.shape), "data": a.ravel().tolist()}
            for n, a in (inputs if inputs is not None else {"input": X8}).items()
        ]
        h = {"content-type": "application/json", **(headers or {})}
        if explain:
            h["x-modulemesh-explain"] = "1"
        return httpx.post(self.infer_url, json={"inputs": tensors}, headers=h, timeout=timeout)

    def envelopes(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.base}/envelopes", timeout=5).json()
        return data

    def audit(self) -> list[dict[str, Any]]:
        return [r for line in list(self.child.lines) if (r := audit.parse_line(line))]


def outputs(response: httpx.Response) -> dict[str, np.ndarray[Any, Any]]:
    """Output tensors of a JSON infer response."""
    body = response.json()
    assert response.status_code == 200, body
    return {
        o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"])
        for o in body["outputs"]
    }


def explain(response: httpx.Response) -> list[dict[str, Any]]:
    """The explain path of a response (success or error)."""
    body = response.json()
    if "explain" in body:
        path: list[dict[str, Any]] = body["explain"]
        return path
    path = body["parameters"]["modulemesh_explain"]["path"]
    return path


def direct(
    url: str, module: str, inputs: dict[str, np.ndarray[Any, Any]]
) -> dict[str, np.ndarray[Any, Any]]:
    """Call a module's sidecar directly (the reference for what the router should return)."""
    tensors = [
        {"name": n, "datatype": "FP32", "shape": list(a.shape), "data": a.ravel().tolist()}
        for n, a in inputs.items()
    ]
    response = httpx.post(f"{url}/v2/models/{module}/infer", json={"inputs": tensors}, timeout=10)
    return outputs(response)


@contextlib.contextmanager
def router(
    tmp: Path,
    graph: ModuleGraph,
    endpoints: dict[str, str],
    gates: list[PrivacyGate] | None = None,
    *,
    poll_interval: float = 1.0,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> Iterator[Router]:
    """Start ``modulemesh router`` for ``graph`` and wait until it is ready (``env`` is added
    to its environment, e.g. ``OTEL_*``; ``args`` to its flags)."""
    resolved = resolve(graph, gates or [], endpoints)
    config = tmp / f"{graph.metadata.name}-resolved.json"
    config.write_text(resolved.dumps())
    port = free_port()
    child = Child(
        f"router-{graph.metadata.name}",
        [sys.executable, "-m", "modulemesh", "router", "--config", str(config),
         "--host", "127.0.0.1", "--port", str(port), "--poll-interval", str(poll_interval),
         *(args or [])],
        log_dir=tmp / "logs",
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert child.alive(), f"router exited:\n{child.tail()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"router not ready:\n{child.tail()}"
            time.sleep(0.05)
        yield Router(child, base, graph.metadata.name)
    finally:
        child.stop()


def dead_endpoint() -> str:
    """A loopback URL nothing listens on (connections are refused at once)."""
    return f"http://127.0.0.1:{free_port()}"


@contextlib.contextmanager
def broken_module(answer: bytes, get_answer: bytes = b"{}") -> Iterator[str]:
    """A module endpoint (an HTTP server on 127.0.0.1 in this process) whose every infer answer
    is ``answer`` and every GET answer ``get_answer``, both with status 200: a misbehaving peer,
    as a foreign or corrupted model server would be."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self._reply(answer)

        def do_GET(self) -> None:
            self._reply(get_answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
