"""The supervisor's restart rules over real child processes, with the clock passed in so every
step is exact: an exit is announced once and restarted when its back-off is due (not before,
not never), the back-off doubles with exits in a row up to its cap and starts afresh once a
child has stayed up; a router that keeps failing gives up naming its port and who holds it;
readiness is never taken from another server on the router's port."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modulemesh import zoo
from modulemesh.api.graph import ModuleGraph
from modulemesh.localmesh.plan import free_port, plan_mesh
from modulemesh.localmesh.process import Child
from modulemesh.localmesh.supervisor import Mesh, MeshError, ModuleProcs, RestartPolicy

EXIT_3 = [sys.executable, "-c", "import sys; sys.exit(3)"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


class AnswersEverything(BaseHTTPRequestHandler):
    """Another server on the router's port: 200 and a JSON body for any GET (as another
    mesh's router, or anything else, might answer)."""

    def do_GET(self) -> None:
        body = b'{"ready":true}'
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Supervised:
    """A planned mesh (nothing started by the fixture) and the supervision lines it said."""

    mesh: Mesh
    said: list[str] = field(default_factory=list)

    def put(self, label: str, args: list[str]) -> Child:
        """Start ``args`` in the slot ``label`` (``router`` or ``clf/runtime|sidecar``)."""
        child = self.mesh._child(label, args)
        if label == "router":
            self.mesh.router = child
        elif "clf" not in self.mesh.modules:
            sidecar = self.mesh._child("clf/sidecar", SLEEP)
            self.mesh.modules["clf"] = ModuleProcs(self.mesh.plan.modules[0], child, sidecar)
        else:
            self.mesh._replace(label, child)
        return child


@pytest.fixture
def sup(tmp_path: Path) -> Iterator[Supervised]:
    model = zoo.save(zoo.classifier(features=8, classes=3), tmp_path / "clf.onnx")
    graph = ModuleGraph.model_validate(
        {"apiVersion": "modulemesh.io/v1alpha1", "kind": "ModuleGraph",
         "metadata": {"name": "sup"},
         "spec": {"modules": [{"name": "clf", "model": {"path": str(model)}}],
                  "routing": {"entry": "main", "nodes": [
                      {"name": "main", "type": "sequence", "steps": [{"module": "clf"}]}]}}}
    )  # fmt: skip
    plan = plan_mesh(graph, [], tmp_path, router_port=free_port())
    said: list[str] = []
    policy = RestartPolicy(first_delay=0.5, max_delay=2.0, stable_after=10.0, router_attempts=4)
    mesh = Mesh(plan, restart=policy, say=said.append)
    try:
        yield Supervised(mesh, said)
    finally:
        mesh.stop(grace=2)
    assert plan.socket_dir is not None and not plan.socket_dir.exists()


def exited(child: Child | None) -> Child:
    """``child`` once it has exited."""
    assert child is not None
    child.popen.wait(30)
    return child


def restarting_in(line: str) -> str:
    """``"1.0s (exit 2 in a row)"`` from a supervision line."""
    return line.rsplit("restarting in ", 1)[1]


def test_an_exit_is_announced_once_and_restarted_when_due(sup: Supervised) -> None:
    mesh, said = sup.mesh, sup.said
    first = exited(sup.put("router", EXIT_3))
    t = time.monotonic()
    mesh.check_children(t)
    assert len(said) == 1 and said[0].startswith("router exited with code 3 after ")
    assert restarting_in(said[0]) == "0.5s (exit 1 in a row)"
    for step in (0.1, 0.2, 0.3, 0.4):  # not due yet: nothing said again, nothing started
        mesh.check_children(t + step)
    assert len(said) == 1 and mesh.router is first
    mesh.check_children(t + 0.5)
    second = mesh.router
    assert second is not None and second is not first
    assert second.args == first.args and second.pid != first.pid
    # it fails again at once: announced once more, with the back-off doubled
    exited(second)
    t = time.monotonic()
    mesh.check_children(t)
    mesh.check_children(t + 0.5)
    assert mesh.router is second
    assert len(said) == 2 and restarting_in(said[1]) == "1.0s (exit 2 in a row)"
    mesh.check_children(t + 1.0)
    assert mesh.router is not second


def test_backoff_doubles_to_its_cap_and_resets_after_a_stable_run(sup: Supervised) -> None:
    mesh, said = sup.mesh, sup.said
    sup.put("clf/runtime", EXIT_3)
    sidecar = mesh.modules["clf"].sidecar
    delays = []
    for _ in range(4):
        exited(mesh.modules["clf"].runtime)
        t = time.monotonic()
        mesh.check_children(t)
        delays.append(restarting_in(said[-1]).split("s ")[0])
        mesh.check_children(t + 5)  # due: restarted (and it fails again)
    assert delays == ["0.5", "1.0", "2.0", "2.0"]
    assert len(said) == 4
    assert all(line.startswith("clf/runtime exited with code 3") for line in said)
    # a runtime that stays up longer than stable_after has recovered: back to the first delay
    exited(mesh.modules["clf"].runtime)
    steady = sup.put("clf/runtime", SLEEP)
    mesh.check_children(time.monotonic() + 11)  # alive past stable_after
    steady.signal(signal.SIGKILL)
    exited(steady)
    mesh.check_children(time.monotonic())
    assert said[-1].startswith("clf/runtime exited with code -9")
    assert restarting_in(said[-1]) == "0.5s (exit 1 in a row)"
    assert mesh.modules["clf"].sidecar is sidecar  # alive all along: never touched


def test_a_router_that_keeps_failing_gives_up_naming_its_port_and_holder(sup: Supervised) -> None:
    mesh = sup.mesh
    port = mesh.plan.router_port
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        sup.put("router", EXIT_3)
        started = time.monotonic()
        with pytest.raises(MeshError) as failure:
            mesh.supervise(threading.Event(), tick=0.05)
        assert time.monotonic() - started < 15  # back-offs of 0.5 + 1 + 2 s, then it gives up
    message = str(failure.value)
    assert "router failed 4 starts in a row (exit codes 3, 3, 3, 3), giving up" in message
    assert f"its port 127.0.0.1:{port} is held by pid {os.getpid()} (" in message
    assert "--port" in message
    assert len([line for line in sup.said if line.startswith("router exited")]) == 3


def test_readiness_is_never_taken_from_another_server_on_the_port(sup: Supervised) -> None:
    mesh = sup.mesh
    port = mesh.plan.router_port
    other = ThreadingHTTPServer(("127.0.0.1", port), AnswersEverything)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(MeshError) as taken:
            mesh.start(ready_timeout=5)
        assert not mesh.modules and mesh.router is None  # refused before starting anything
        assert mesh.plan.socket_dir is not None and not mesh.plan.socket_dir.exists()
        message = str(taken.value)
        assert (
            f"router port 127.0.0.1:{port} is already in use (held by pid {os.getpid()}" in message
        )
        assert "choose another port with --port" in message
        # our "router" runs, but another server answers on the port: its 200s must not count
        ours = sup.put("router", SLEEP)
        with pytest.raises(MeshError) as impostor:
            mesh.wait_router(time.monotonic() + 10)
        assert f"held by pid {os.getpid()}" in str(impostor.value)
        assert f"not our router (pid {ours.pid})" in str(impostor.value)
    finally:
        other.shutdown()
        other.server_close()
