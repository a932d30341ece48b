"""The router's side of rollouts: each module with a running canary gets a client for the
canary's sidecar and a :class:`~modulemesh.rollout.controller.Controller`; every call of that
module goes through :meth:`ModuleRollout.infer`, which splits it by the current step, measures
both versions and mirrors shadow copies; a ticker judges the steps.

A canary call that fails is measured (that is the point) and then served by stable within the
same call's time (the canary gets half of it), so a bad canary, even a hung one, costs the
client latency, never an error. Stable's failures
are the client's as ever: the router's retries, breaker and fallbacks act on them as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import Gauge

from modulemesh import oip
from modulemesh.api.graph import Module
from modulemesh.api.resolved import ResolvedGraph
from modulemesh.rollout.controller import Controller, Phase, Route
from modulemesh.rollout.outputs import agree
from modulemesh.router.client import ModuleClient
from modulemesh.router.context import Output, RawAnswer, Tensors
from modulemesh.router.envelopes import ModuleEnvelope
from modulemesh.router.errors import RouteError
from modulemesh.router.metrics import RouterMetrics

__all__ = ["ModuleRollout", "Rollouts"]

_log = logging.getLogger("modulemesh.router")

MAX_SHADOW_IN_FLIGHT = 64
"""Shadow copies in flight per module; beyond, a copy is skipped (counted), so a slow canary
cannot pile up work in the router."""

Spawn = Callable[[Awaitable[Any]], None]


class ModuleRollout:
    """One module's canary: its client, its controller, its shadow copies."""

    def __init__(self, module: Module, endpoint: str, spawn: Spawn) -> None:
        assert module.canary is not None
        self.module = module
        self.client = ModuleClient(module.name, endpoint, ModuleEnvelope(module.name))
        self.controller = Controller(
            module.name,
            module.rollout_policy,
            stable_version=module.version,
            canary_version=module.canary.version,
        )
        self.comparison = module.rollout_policy.shadow_comparison
        self.spawn = spawn
        self.shadow_in_flight = 0
        self.shadow_skipped = 0

    async def infer(
        self,
        stable: ModuleClient,
        inputs: Tensors,
        *,
        key: str,
        timeout: float,
        tags: str | None,
        hop_headers: list[tuple[bytes, bytes]],
        where: str,
        final: oip.RequestHead | None,
    ) -> tuple[Tensors | RawAnswer, str | None]:
        """One call of the module, to the version the current step picks for ``key``."""
        controller = self.controller
        route = controller.route(key)
        if route is Route.CANARY:
            # While the rollout judges, the canary gets half the call's time: one that hangs is
            # measured as failing and stable still answers within the other half.
            budget = timeout / 2 if controller.recording else timeout
            started = time.perf_counter()
            try:
                answer = await self.client.infer(
                    inputs, timeout=budget, tags=tags, hop_headers=hop_headers,
                    where=where, final=final,
                )  # fmt: skip
            except RouteError as exc:
                elapsed = time.perf_counter() - started
                controller.record(Route.CANARY, elapsed * 1000.0, False, None)
                timeout -= elapsed
                if not controller.recording or timeout <= 0:
                    raise  # promoted: the canary is the module now; or no time left
                _log.debug("module %s: canary failed (%s); stable serves", self.module.name, exc)
            else:
                elapsed_ms = (time.perf_counter() - started) * 1000.0
                if controller.recording:
                    controller.record(Route.CANARY, elapsed_ms, True, self._confidence(answer[0]))
                return answer
        started = time.perf_counter()
        try:
            answer = await stable.infer(
                inputs, timeout=timeout, tags=tags, hop_headers=hop_headers,
                where=where, final=final,
            )  # fmt: skip
        except RouteError:
            controller.record(Route.STABLE, (time.perf_counter() - started) * 1000.0, False, None)
            raise
        if controller.recording:
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            controller.record(Route.STABLE, elapsed_ms, True, self._confidence(answer[0]))
            if route is Route.SHADOW and self.shadow_in_flight >= MAX_SHADOW_IN_FLIGHT:
                self.shadow_skipped += 1
            elif route is Route.SHADOW:
                self.shadow_in_flight += 1
                self.spawn(self._shadow(inputs, answer[0], timeout, tags, hop_headers, where))
        return answer

    def _confidence(self, outputs: Tensors | RawAnswer) -> float | None:
        try:
            if isinstance(outputs, RawAnswer):
                return Output(None, self.module.name, self.module.confidence_output,
                              raw=outputs).confidence  # fmt: skip
            return Output(outputs, self.module.name, self.module.confidence_output).confidence
        except RouteError:
            return None

    async def _shadow(
        self,
        inputs: Tensors,
        served: Tensors | RawAnswer,
        timeout: float,
        tags: str | None,
        hop_headers: list[tuple[bytes, bytes]],
        where: str,
    ) -> None:
        """A copy of a served call to the canary: measured, and its answer compared."""
        controller = self.controller
        started = time.perf_counter()
        try:
            answer, _ = await self.client.infer(
                inputs, timeout=timeout, tags=tags, hop_headers=hop_headers,
                where=f"{where} (shadow copy)", final=None,
            )  # fmt: skip
        except RouteError:
            controller.record(Route.CANARY, (time.perf_counter() - started) * 1000.0, False, None)
            controller.record_agreement(False)
            return
        finally:
            self.shadow_in_flight -= 1
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        assert not isinstance(answer, RawAnswer)
        controller.record(Route.CANARY, elapsed_ms, True, self._confidence(answer))
        try:
            stable = (
                Output(None, self.module.name, raw=served).tensors
                if isinstance(served, RawAnswer)
                else served
            )
        except RouteError:
            return
        controller.record_agreement(agree(stable, answer, self.comparison.agreement,
                                          self.comparison.atol))  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """The compact form the operator copies into the graph's status (``GET /envelopes``):
        phase, step, share, versions, reason and the figures of the latest judgement."""
        c = self.controller
        step = c.steps[c.step]
        verdict = c.history[-1].figures if c.history and not c.recording else None
        if verdict is None and c.last_verdict is not None:
            verdict = c.last_verdict["figures"]
        return {
            "phase": c.phase.value,
            "step": c.step + 1,
            "steps": len(c.steps),
            "stepPercent": step.percent,
            "shadow": step.shadow,
            "canaryShare": c.canary_share,
            "stableVersion": c.stable_version,
            "canaryVersion": c.canary_version,
            "reason": c.reason or (c.last_verdict or {}).get("reason", ""),
            "figures": verdict or [],
        }

    def snapshot(self) -> dict[str, Any]:
        """Status of this rollout, with the canary's endpoint and skipped shadow copies."""
        out = self.controller.snapshot()
        out["canaryEndpoint"] = self.client.endpoint
        out["shadowSkipped"] = self.shadow_skipped
        return out


class Rollouts:
    """Every rollout of one graph (modules with a canary endpoint), and the ticker that judges
    their steps."""

    def __init__(
        self,
        resolved: ResolvedGraph,
        spawn: Spawn,
        tick: float = 0.2,
        metrics: RouterMetrics | None = None,
        state_path: Path | None = None,
    ) -> None:
        self.graph = resolved.name
        self.modules: dict[str, ModuleRollout] = {}
        for module in resolved.spec.modules:
            endpoint = (resolved.canary_endpoints or {}).get(module.name)
            if module.canary is not None and endpoint is not None:
                self.modules[module.name] = ModuleRollout(module, endpoint, spawn)
        self.state_path = state_path
        """Where each rollout's step is kept across router restarts (``--rollout-state``)."""
        self.resumed = self._resume() if state_path is not None and self.modules else set()
        self.tick = tick
        self._task: asyncio.Task[None] | None = None
        if metrics is not None and self.modules:
            self._gauges(metrics)

    def _gauges(self, metrics: RouterMetrics) -> None:
        """Each rollout's step, canary share and phase on ``/metrics``, read when scraped."""
        step = Gauge(
            "modulemesh_router_rollout_step", "Current step of a module's rollout (1-based).",
            ["graph", "module"], registry=metrics.registry,
        )  # fmt: skip
        share = Gauge(
            "modulemesh_router_rollout_canary_share",
            "Percent of a module's calls its canary serves now.",
            ["graph", "module"], registry=metrics.registry,
        )  # fmt: skip
        phase = Gauge(
            "modulemesh_router_rollout_phase",
            "1 for the phase a module's rollout is in (Progressing, Promoted, RolledBack).",
            ["graph", "module", "phase"], registry=metrics.registry,
        )  # fmt: skip
        for name, rollout in self.modules.items():
            c = rollout.controller
            step.labels(self.graph, name).set_function(functools.partial(_step, c))
            share.labels(self.graph, name).set_function(functools.partial(_share, c))
            for p in Phase:
                phase.labels(self.graph, name, p.value).set_function(
                    functools.partial(_in_phase, c, p)
                )

    def _resume(self) -> set[str]:
        """Resume each rollout the state file holds for it (same versions and steps); a missing
        or unreadable file starts every rollout at step 1 (logged)."""
        assert self.state_path is not None
        try:
            saved = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            _log.warning(
                "rollout state %s unreadable (%s): starting at step 1", self.state_path, exc
            )
            return set()
        modules = saved.get("modules") if isinstance(saved, dict) else None
        resumed = set()
        for name, rollout in self.modules.items():
            state = (modules or {}).get(name)
            if isinstance(state, dict) and rollout.controller.resume(state):
                resumed.add(name)
        return resumed

    def save(self) -> None:
        """Write every rollout's state (a new file renamed over the old, so a router killed
        while writing leaves the previous state whole)."""
        if self.state_path is None:
            return
        document = {
            "graph": self.graph,
            "modules": {n: r.controller.saved() for n, r in self.modules.items()},
        }
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(document), encoding="utf-8")
            os.replace(tmp, self.state_path)
        except OSError as exc:
            _log.warning("rollout state %s not written: %s", self.state_path, exc)

    def get(self, module: str) -> ModuleRollout | None:
        """The rollout of ``module``, or None (most modules: the hot path pays one lookup)."""
        return self.modules.get(module) if self.modules else None

    def start(self) -> None:
        """Open the canaries' pools and start judging (inside the running loop)."""
        for name, rollout in self.modules.items():
            rollout.client.start()
            c = rollout.controller
            step = c.steps[c.step]
            _log.info(
                "rollout of module %s: version %s -> %s, %s %d of %d (%d%%%s)",
                name, c.stable_version, c.canary_version,
                f"resumed ({c.phase.value}) at step" if name in self.resumed else "step",
                c.step + 1, len(c.steps), step.percent, " shadow" if step.shadow else "",
            )  # fmt: skip
        if self.modules:
            self.save()
            self._task = asyncio.ensure_future(self._judge())

    async def stop(self) -> None:
        """Stop judging and close the canaries' pools."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for rollout in self.modules.values():
            rollout.client.close()

    async def _judge(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            self.evaluate()

    def evaluate(self) -> None:
        """Judge every rollout's current step once; log what changed."""
        for name, rollout in self.modules.items():
            try:
                done = rollout.controller.evaluate()
            except Exception:  # a bug in analysis must not stop the ticker
                _log.exception("rollout of module %s: evaluation failed", name)
                continue
            if done is None:
                continue
            self.save()
            level = logging.WARNING if done.kind == "RolledBack" else logging.INFO
            _log.log(level, "rollout of module %s: %s at step %d (%d%%): %s",
                     name, done.kind, done.step, done.percent, done.reason)  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        """``GET /rollouts``: every rollout's status."""
        return {
            "graph": self.graph,
            "time": time.time(),
            "rollouts": {name: r.snapshot() for name, r in self.modules.items()},
        }


def _step(controller: Controller) -> float:
    return float(controller.step + 1)


def _share(controller: Controller) -> float:
    return float(controller.canary_share)


def _in_phase(controller: Controller, phase: Phase) -> float:
    return float(controller.phase is phase)
