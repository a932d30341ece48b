"""``modulemesh run`` under real faults: its runtimes have no TCP port and their sockets admit
only their owner (so only the sidecars reach them); a runtime and a sidecar killed with SIGKILL
come back and the graph serves again; a router port held by another server fails the run fast
with the port, its holder and the flag to change it, never "ready"; a router that keeps failing
to start (its port taken while the mesh runs) ends the run with exit code 1."""

from __future__ import annotations

import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from httpserver.test_unix_socket import NOBODY, connect_as
from sidecar.test_unix_upstream import tcp_listening_ports

from localmesh.test_run import ROOT, Run, alive, children_of
from localmesh.test_supervision import AnswersEverything
from modulemesh.localmesh.plan import free_port

BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}
RECOVERY_BOUND = 60.0
"""Seconds a killed process of a running mesh has to be back and the graph serving again."""


def argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def child(run: Run, module: str, kind: str) -> int:
    """The pid of ``module``'s ``kind`` (runtime or sidecar) among the run's children."""
    for pid in children_of(run.popen.pid):
        args = argv(pid)
        if kind in args[3:4] and ("--name" in args or "--module" in args):
            flag = "--name" if kind == "runtime" else "--module"
            if args[args.index(flag) + 1] == module and alive(pid):
                return pid
    raise AssertionError(f"no live {module}/{kind} among the children of {run.popen.pid}")


def flag(pid: int, name: str) -> str:
    args = argv(pid)
    return args[args.index(name) + 1]


def graph_copy(directory: Path) -> Path:
    """The quickstart example and its model builder in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("quickstart.yaml", "build_models.py"):
        (directory / name).write_bytes((ROOT / "examples" / name).read_bytes())
    return directory / "quickstart.yaml"


def start(graph: Path, port: int) -> Run:
    run = Run([str(graph), "--port", str(port), "--quiet"], graph.parent)
    try:
        run.wait_line("ready:", timeout=120)
    except BaseException:
        stop(run)
        raise
    return run


def stop(run: Run) -> None:
    if run.popen.poll() is None:
        run.popen.send_signal(signal.SIGTERM)
        try:
            run.popen.wait(30)
        except Exception:
            run.popen.kill()
            run.popen.wait(10)


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return graph_copy(tmp_path_factory.mktemp("faults") / "examples")


@pytest.fixture(scope="module")
def mesh(graph: Path) -> Iterator[tuple[Run, int]]:
    """One running quickstart mesh shared by the tests that restore what they break."""
    port = free_port()
    run = start(graph, port)
    yield run, port
    stop(run)


def serves(port: int) -> bool:
    try:
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v2/models/quickstart/infer", json=BODY, timeout=10
        )
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and answer.json()["outputs"][0]["shape"] == [1, 3]


def http_over_unix(path: str, target: str) -> bytes:
    """The status line of a GET over the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(f"GET {target} HTTP/1.1\r\nhost: localhost\r\n\r\n".encode())
        return sock.recv(65536).split(b"\r\n", 1)[0]


def test_runtimes_have_no_port_and_admit_only_their_owner(mesh: tuple[Run, int]) -> None:
    run, port = mesh
    for module in ("embedder", "classifier"):
        runtime, sidecar = child(run, module, "runtime"), child(run, module, "sidecar")
        assert tcp_listening_ports(runtime) == set(), f"{module}'s runtime listens on TCP"
        # the sidecar's HTTP and gRPC ports; the runtime's gRPC is a socket beside its HTTP one
        ports = {int(flag(sidecar, "--port")), int(flag(sidecar, "--grpc-port"))}
        assert tcp_listening_ports(sidecar) == ports
        path, grpc_path = flag(runtime, "--uds"), flag(runtime, "--grpc-uds")
        assert flag(sidecar, "--upstream") == f"unix:{path}"
        assert flag(sidecar, "--grpc-upstream") == f"unix:{grpc_path}"
        assert os.path.dirname(grpc_path) == os.path.dirname(path)
        for socket_path in (path, grpc_path):
            assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600, socket_path
            assert connect_as(NOBODY, socket_path) == "refused"
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        assert http_over_unix(path, "/v2/health/ready") == b"HTTP/1.1 200 OK"  # the owner can
    assert serves(port)


@pytest.mark.parametrize(("module", "kind"), [("embedder", "runtime"), ("classifier", "sidecar")])
def test_a_killed_process_comes_back_and_the_graph_serves_again(
    mesh: tuple[Run, int], module: str, kind: str
) -> None:
    run, port = mesh
    assert serves(port)
    old = child(run, module, kind)
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    while alive(old):
        assert time.monotonic() - killed < 10
        time.sleep(0.01)
    while not serves(port):
        assert time.monotonic() - killed < RECOVERY_BOUND, "\n".join(run.lines[-30:])
        time.sleep(0.25)
    new = child(run, module, kind)
    assert new != old and not alive(old)
    announced = [line for line in run.lines if line.startswith(f"{module}/{kind} exited")]
    assert len(announced) == 1, announced  # once per restart, not every supervision tick
    assert "exited with code -9" in announced[0] and "restarting in 0.5s" in announced[0]


def test_a_taken_router_port_fails_fast_and_never_says_ready(graph: Path) -> None:
    port = free_port()
    other = ThreadingHTTPServer(("127.0.0.1", port), AnswersEverything)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        run = Run([str(graph), "--port", str(port)], graph.parent)  # child logs shown
        try:
            code = run.popen.wait(90)
        finally:
            stop(run)
    finally:
        other.shutdown()
        other.server_close()
    text = run.output()
    assert code == 1, text
    assert f"router port 127.0.0.1:{port} is already in use (held by pid {os.getpid()}" in text
    assert "choose another port with --port" in text
    assert " ready: " not in text
    # refused before any module was started: no child ever said a word
    assert not [line for line in run.lines if line.startswith(("[embedder/", "[classifier/"))]


def test_a_router_that_keeps_failing_ends_the_run(graph: Path) -> None:
    port = free_port()
    run = start(graph, port)
    try:
        kids = children_of(run.popen.pid)
        router = next(pid for pid in kids if "router" in argv(pid)[3:4])
        os.kill(router, signal.SIGKILL)
        with socket.socket() as holder:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            deadline = time.monotonic() + 10
            while True:  # take the port as soon as the killed router's socket is gone
                try:
                    holder.bind(("127.0.0.1", port))
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the killed router's port stayed taken"
                    time.sleep(0.01)
            holder.listen()
            code = run.popen.wait(90)  # back-offs 0.5 + 1 + 2 + 4 s and five router starts
        text = run.output()
        assert code == 1, text
        assert "router failed 5 starts in a row" in text and "giving up" in text
        assert f"its port 127.0.0.1:{port} is held by pid {os.getpid()}" in text
        assert len([line for line in run.lines if line.startswith("router exited")]) == 4
        deadline = time.monotonic() + 30
        while [k for k in kids if alive(k)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [k for k in kids if alive(k)]
    finally:
        stop(run)
