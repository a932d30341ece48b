"""Starts, watches and stops the processes of one local mesh.

Order: check that every port the mesh needs is free, start every module's runtime and sidecar
(in parallel), wait until every sidecar is ready (its runtime loaded and warmed up), write the
resolved graph pointing at the sidecars, start the router and wait until it serves THIS graph
(``/v2/models/<graph>/ready``, from our own router process). Stopping goes the other way:
router, sidecars, runtimes.

While the mesh runs, :meth:`Mesh.supervise` restarts any child that exits, as a Deployment
would: after a back-off that doubles with each exit in a row (capped), and resets once the
child has stayed up a while. The router, without which nothing serves, gives up after a few
failed starts in a row (its port taken, say) with an error naming the port and its holder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from modulemesh.api.resolved import resolve
from modulemesh.localmesh import ports
from modulemesh.localmesh.plan import HOST, MeshPlan, ModulePlan
from modulemesh.localmesh.process import Child

__all__ = ["Mesh", "MeshError", "ModuleProcs", "RestartPolicy"]


class MeshError(RuntimeError):
    """The mesh could not start, or its router gave up; the message names the process (or
    port) and shows its last output."""


@dataclass(frozen=True)
class RestartPolicy:
    """How children that exit are restarted (CrashLoopBackOff-like)."""

    first_delay: float = 0.5
    """Seconds before the first restart; each exit in a row doubles it."""
    max_delay: float = 30.0
    """The back-off never grows past this."""
    stable_after: float = 30.0
    """A child up this long has recovered: its next exit starts the back-off afresh."""
    router_attempts: int = 5
    """Failed router starts in a row (each exit within ``stable_after``) before giving up."""

    def delay(self, failures: int) -> float:
        """The wait before restarting after ``failures`` exits in a row (1, 2, ...)."""
        return float(min(self.max_delay, self.first_delay * 2 ** min(failures - 1, 30)))


@dataclass
class _Restarts:
    """Restart bookkeeping of one child slot (its label)."""

    started: float
    failures: int = 0
    """Exits in a row, each within ``stable_after`` of its start (the first one counts)."""
    due: float | None = None
    """When the scheduled restart happens; ``None`` while the child runs."""
    history: list[int] = field(default_factory=list)
    """Exit codes of the exits in a row, for the give-up message."""


@dataclass
class ModuleProcs:
    """A module's two processes."""

    plan: ModulePlan
    runtime: Child
    sidecar: Child


def _print(text: str) -> None:
    print(text, flush=True)


def _get(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return 0, None


DP_LEDGER_ENV = "MODULEMESH_ROUTER_DP_LEDGER"


def with_dp_ledger(plan: MeshPlan, env: dict[str, str] | None) -> dict[str, str] | None:
    """``env`` plus, when a gate of the graph declares differential privacy and neither
    ``env`` nor this process names a ledger, the router's budget ledger file under
    ``$XDG_STATE_HOME/modulemesh/`` (``~/.local/state`` by default): it outlives the run, so
    neither a router restart nor a new ``modulemesh run`` resets what principals spent."""
    if not any(g.spec.differential_privacy for g in plan.gates):
        return env
    if (env and DP_LEDGER_ENV in env) or os.environ.get(DP_LEDGER_ENV):
        return env
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    ledger = Path(state) / "modulemesh" / f"{plan.graph.metadata.name}.dp-ledger.json"
    return {**(env or {}), DP_LEDGER_ENV: str(ledger)}


class Mesh:
    """The processes of one graph on loopback."""

    def __init__(
        self,
        plan: MeshPlan,
        *,
        log_dir: Path | None = None,
        echo: IO[str] | None = None,
        env: dict[str, str] | None = None,
        restart: RestartPolicy | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.plan = plan
        self.log_dir = log_dir
        self.echo = echo
        self.env = with_dp_ledger(plan, env)
        """Added to every child's environment (e.g. ``OTEL_*``), over this process's own."""
        self.restart = restart or RestartPolicy()
        self.say = say or _print
        """Where supervision events go (one line per exit, saying when it restarts)."""
        self.modules: dict[str, ModuleProcs] = {}
        self.router: Child | None = None
        self._restarts: dict[str, _Restarts] = {}
        self._workdir = tempfile.TemporaryDirectory(prefix="modulemesh-run-")
        self.config_path = Path(self._workdir.name) / "resolved.json"

    def check_ports(self) -> None:
        """Raise :class:`MeshError` naming every port the mesh needs that is taken, its holder
        and how to choose another."""
        taken = []
        port = self.plan.router_port
        if not ports.port_free(port):
            taken.append(
                f"router port {HOST}:{port} is already in use ({ports.describe_holders(port)}); "
                "stop that process or choose another port with --port (0 picks a free one)"
            )
        grpc = self.plan.router_grpc_port
        if grpc and not ports.port_free(grpc):
            taken.append(
                f"router gRPC port {HOST}:{grpc} was free when picked but is now in use "
                f"({ports.describe_holders(grpc)}); run again to pick another"
            )
        for m in self.plan.modules:
            for what, port in (("sidecar", m.sidecar_port), ("sidecar gRPC", m.sidecar_grpc_port)):
                if port and not ports.port_free(port):
                    taken.append(
                        f"{what} port {HOST}:{port} of module {m.name!r} was free when "
                        f"picked but is now in use ({ports.describe_holders(port)}); "
                        "run again to pick another"
                    )
        if taken:
            raise MeshError("\n".join(taken))

    def start(self, ready_timeout: float = 60.0) -> None:
        """Check the ports, start everything and wait until the router serves this graph;
        raises :class:`MeshError`."""
        try:
            self.check_ports()
            for m in self.plan.modules:
                self.start_module(m.name)
            deadline = time.monotonic() + ready_timeout
            for name in self.modules:
                self.wait_module(name, deadline)
            self._write_config()
            self.router = self._child(
                "router",
                [*self.plan.modules[0].runtime_args[:3], "router", "--config", str(self.config_path),
                 "--host", HOST, "--port", str(self.plan.router_port), "--poll-interval", "1",
                 "--grpc-port", str(self.plan.router_grpc_port),
                 "--rollout-state", str(self.config_path.with_name("rollout-state.json"))],
            )  # fmt: skip
            self.wait_router(deadline)
        except BaseException:
            self.stop()
            raise

    def wait_router(self, deadline: float) -> None:
        """Wait until our router serves this graph on its port: the graph's own readiness URL
        answers 200 (any other server, even another mesh's router, answers 404 or not at all
        there) and, where ``/proc`` tells, the port's listener is our router process."""
        router = self.router
        assert router is not None
        port = self.plan.router_port
        self._wait(router, f"http://{HOST}:{port}/v2/models/{self.plan.graph.metadata.name}/ready",
                   deadline)  # fmt: skip
        found = ports.holders(port)
        if found is not None and router.pid not in {h.pid for h in found}:
            raise MeshError(
                f"port {HOST}:{port} answered ready, but it is "
                f"{ports.describe_holders(port)}, not our router (pid {router.pid})"
            )

    def _child(self, label: str, args: list[str]) -> Child:
        child = Child(label, args, log_dir=self.log_dir, echo=self.echo, env=self.env)
        restarts = self._restarts.get(label)
        if restarts is None:
            self._restarts[label] = _Restarts(started=time.monotonic())
        else:
            restarts.started, restarts.due = time.monotonic(), None
        return child

    def _slots(self) -> list[tuple[str, Child]]:
        """Every supervised child by label: router first, then each module's two."""
        out = [("router", self.router)] if self.router is not None else []
        for name, procs in self.modules.items():
            out += [(f"{name}/runtime", procs.runtime), (f"{name}/sidecar", procs.sidecar)]
        return out

    def _replace(self, label: str, child: Child) -> None:
        if label == "router":
            self.router = child
            return
        name, kind = label.rsplit("/", 1)
        if kind == "runtime":
            self.modules[name].runtime = child
        else:
            self.modules[name].sidecar = child

    def supervise(self, stop: threading.Event, tick: float = 0.2) -> None:
        """Restart children that exit until ``stop`` is set; raises :class:`MeshError` when
        the router gives up."""
        while not stop.wait(tick):
            self.check_children(time.monotonic())

    def check_children(self, now: float) -> None:
        """One supervision pass: note exits, schedule restarts, carry out those now due."""
        policy = self.restart
        for label, child in self._slots():
            state = self._restarts.setdefault(label, _Restarts(started=now))
            if child.alive():
                if state.failures and now - state.started >= policy.stable_after:
                    state.failures, state.history = 0, []  # stayed up: it has recovered
                continue
            if state.due is None:  # a new exit: count it and schedule the restart once
                code = child.popen.returncode
                lived = now - state.started
                if lived >= policy.stable_after:
                    state.failures, state.history = 0, []
                state.failures += 1
                state.history.append(code)
                if label == "router" and state.failures >= policy.router_attempts:
                    raise MeshError(self._router_gave_up(child, state))
                delay = policy.delay(state.failures)
                state.due = now + delay
                self.say(
                    f"{label} exited with code {code} after {lived:.1f}s; "
                    f"restarting in {delay:.1f}s (exit {state.failures} in a row)"
                )
            elif now >= state.due:
                child.stop(1.0)  # reaps it and ends its log pump
                self._replace(label, self._child(label, child.args))

    def _router_gave_up(self, child: Child, state: _Restarts) -> str:
        port = self.plan.router_port
        codes = ", ".join(str(c) for c in state.history)
        return (
            f"router failed {state.failures} starts in a row (exit codes {codes}), giving up; "
            f"its port {HOST}:{port} is {ports.describe_holders(port)}; choose another with "
            f"--port if it is taken. Its last output:\n{child.tail()}"
        )

    def start_module(self, name: str) -> ModuleProcs:
        """Start (or restart) a module's runtime and sidecar, without waiting."""
        plan = next(m for m in self.plan.modules if m.name == name)
        procs = ModuleProcs(
            plan,
            self._child(f"{name}/runtime", plan.runtime_args),
            self._child(f"{name}/sidecar", plan.sidecar_args),
        )
        self.modules[name] = procs
        return procs

    def start_runtime(self, name: str) -> Child:
        """Start a module's runtime again (after it was stopped or killed)."""
        procs = self.modules[name]
        procs.runtime = self._child(f"{name}/runtime", procs.plan.runtime_args)
        return procs.runtime

    def wait_module(self, name: str, deadline: float) -> None:
        """Wait until the module's sidecar says ready (its runtime loaded and warm)."""
        procs = self.modules[name]
        url = f"{procs.plan.url}/readyz"
        while True:
            for child in (procs.runtime, procs.sidecar):
                if not child.alive():
                    raise MeshError(
                        f"{child.label} exited with code {child.popen.returncode}:\n{child.tail()}"
                    )
            status, _ = _get(url, timeout=1.0)
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise MeshError(
                    f"module {name!r} not ready in time ({url});\nruntime said:\n"
                    f"{procs.runtime.tail()}\nsidecar said:\n{procs.sidecar.tail()}"
                )
            time.sleep(0.1)

    def _wait(self, child: Child, url: str, deadline: float) -> None:
        while True:
            if not child.alive():
                raise MeshError(
                    f"{child.label} exited with code {child.popen.returncode}:\n{child.tail()}"
                )
            status, _ = _get(url, timeout=1.0)
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise MeshError(f"{child.label} not ready in time ({url}):\n{child.tail()}")
            time.sleep(0.1)

    def _write_config(self) -> None:
        modules = self.plan.modules
        endpoints = {m.name: m.url for m in modules if m.canary_of is None}
        canaries = {m.canary_of: m.url for m in modules if m.canary_of is not None}
        resolved = resolve(self.plan.graph, self.plan.gates, endpoints, canaries)
        self.config_path.write_text(resolved.dumps())

    def children(self) -> list[Child]:
        """Every child, router first (the order they are stopped in)."""
        out: list[Child] = [self.router] if self.router is not None else []
        out += [p.sidecar for p in self.modules.values()]
        out += [p.runtime for p in self.modules.values()]
        return out

    def table(self) -> list[dict[str, Any]]:
        """Per module: provider, ports and state, read from the sidecars' envelopes."""
        rows = []
        for name, procs in self.modules.items():
            status, envelope = _get(f"{procs.plan.url}/envelope", timeout=1.0)
            env = envelope if status == 200 and isinstance(envelope, dict) else {}
            rows.append(
                {
                    "module": name,
                    "provider": env.get("provider") or "-",
                    "runtime": f"unix:{procs.plan.runtime_socket}",
                    "sidecar": procs.plan.sidecar_port,
                    "state": env.get("state") or ("down" if not procs.sidecar.alive() else "?"),
                }
            )
        return rows

    def stop(self, grace: float = 10.0) -> None:
        """Stop every child (router, sidecars, runtimes), each by its process group."""
        for child in self.children():
            child.stop(grace)
        self._workdir.cleanup()
        if self.plan.socket_dir is not None:
            shutil.rmtree(self.plan.socket_dir, ignore_errors=True)
