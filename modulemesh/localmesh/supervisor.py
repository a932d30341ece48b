"""Starts, watches and stops the processes of one local mesh.

Order: every module's runtime and sidecar (in parallel), wait until every sidecar is ready
(its runtime loaded and warmed up), write the resolved graph pointing at the sidecars, start
the router and wait for it. Stopping goes the other way: router, sidecars, runtimes.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from modulemesh.api.resolved import resolve
from modulemesh.localmesh.plan import HOST, MeshPlan, ModulePlan
from modulemesh.localmesh.process import Child

__all__ = ["Mesh", "MeshError", "ModuleProcs"]


class MeshError(RuntimeError):
    """The mesh could not start; the message names the process and shows its last output."""


@dataclass
class ModuleProcs:
    """A module's two processes."""

    plan: ModulePlan
    runtime: Child
    sidecar: Child


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


class Mesh:
    """The processes of one graph on loopback."""

    def __init__(
        self,
        plan: MeshPlan,
        *,
        log_dir: Path | None = None,
        echo: IO[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.plan = plan
        self.log_dir = log_dir
        self.echo = echo
        self.env = env
        """Added to every child's environment (e.g. ``OTEL_*``), over this process's own."""
        self.modules: dict[str, ModuleProcs] = {}
        self.router: Child | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="modulemesh-run-")
        self.config_path = Path(self._workdir.name) / "resolved.json"

    def start(self, ready_timeout: float = 60.0) -> None:
        """Start everything and wait until the router is ready; raises :class:`MeshError`."""
        try:
            for m in self.plan.modules:
                self.start_module(m.name)
            deadline = time.monotonic() + ready_timeout
            for name in self.modules:
                self.wait_module(name, deadline)
            self._write_config()
            self.router = self._child(
                "router",
                [*self.plan.modules[0].runtime_args[:3], "router", "--config", str(self.config_path),
                 "--host", HOST, "--port", str(self.plan.router_port), "--poll-interval", "1"],
            )  # fmt: skip
            self._wait(
                self.router, f"http://{HOST}:{self.plan.router_port}/v2/health/ready", deadline
            )
        except BaseException:
            self.stop()
            raise

    def _child(self, label: str, args: list[str]) -> Child:
        return Child(label, args, log_dir=self.log_dir, echo=self.echo, env=self.env)

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
        endpoints = {m.name: m.url for m in self.plan.modules}
        resolved = resolve(self.plan.graph, self.plan.gates, endpoints)
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
                    "runtime": procs.plan.runtime_port,
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
