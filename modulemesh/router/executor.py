"""Runs the routing tree: node dispatch, and every module call with its resilience.

A module call goes through, in order: privacy clearance (fail closed), health by envelope,
the circuit breaker, the result cache, then attempts with per-call timeout bounded by the
request deadline and retries within the budget. Whenever the module cannot serve the call
(not cleared, in a state ``policy.fallbackOn`` lists -- Unhealthy, and Degraded when listed --,
ejected, failing, too slow) its declared ``fallback`` is tried, transitively; otherwise the
error names the node, the step and the module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer

from modulemesh import headers
from modulemesh.api.graph import CascadeNode, Module, Node, SwitchNode, Target, ValidateNode
from modulemesh.api.resolved import ResolvedGraph
from modulemesh.cel import Condition, Environment, compile_condition
from modulemesh.envelope import State
from modulemesh.privacy.dp import NoiseError
from modulemesh.privacy.ledger import Ledger
from modulemesh.rollout.traffic import Rollouts
from modulemesh.router.cache import ResultCache, input_digest
from modulemesh.router.client import ModuleClient
from modulemesh.router.context import Output, RawAnswer, RequestContext, Tensors
from modulemesh.router.envelopes import EnvelopeStore
from modulemesh.router.errors import RouteError
from modulemesh.router.metrics import RouterMetrics
from modulemesh.router.payload import ClientInputs
from modulemesh.router.privacy import Privacy
from modulemesh.router.resilience import Breaker, RetryBudget
from modulemesh.telemetry import inject

__all__ = ["Executor"]

_NO_SPAN = contextlib.nullcontext()

_log = logging.getLogger("modulemesh.router")

Handler = Callable[["Executor", Any, RequestContext, Tensors, bool], Awaitable[Output]]
"""``run(executor, node, ctx, inputs, final)``; ``final``: the node's output is the graph's
answer, returned to the client as it is (so its last call may answer in the client's format)."""


class Executor:
    """One graph's routing tree, ready to run requests."""

    def __init__(
        self,
        resolved: ResolvedGraph,
        *,
        tracer: Tracer | None = None,
        metrics: RouterMetrics | None = None,
        ledger: Ledger | None = None,
        rollout_state: Path | None = None,
    ) -> None:
        from modulemesh.router.nodes import HANDLERS

        spec = resolved.spec
        self.graph = resolved.name
        self.spec = spec
        self.policy = spec.policy
        self.modules: dict[str, Module] = {m.name: m for m in spec.modules}
        self.nodes: dict[str, Node] = {n.name: n for n in spec.routing.nodes}
        missing = sorted(set(self.modules) - set(resolved.endpoints))
        if missing:
            raise ValueError(f"resolved graph has no endpoint for module(s) {', '.join(missing)}")
        self.envelopes = EnvelopeStore(
            self.modules, self.policy.envelope_stale_after_seconds, on_healthy=self._healthy
        )
        self.fallback_states = frozenset(State(s.value) for s in self.policy.fallback_on)
        """Envelope states in which a module with a fallback is passed over for it."""
        self.clients = {
            name: ModuleClient(name, resolved.endpoints[name], self.envelopes[name])
            for name in self.modules
        }
        self.breakers = {name: Breaker(self.policy.circuit_breaker) for name in self.modules}
        self.budgets = {name: RetryBudget(self.policy.retries) for name in self.modules}
        self.privacy = Privacy(
            resolved.gates, self.modules, resolved.name,
            namespace=resolved.namespace, ledger=ledger,
        )  # fmt: skip
        cache = self.policy.cache
        self.cache = ResultCache(cache.max_entries, cache.ttl_seconds) if cache.enabled else None
        self.conditions = _compile_conditions(spec.routing.nodes)
        self.handlers: dict[str, Handler] = HANDLERS
        self.tracer = tracer
        self.metrics = metrics
        self.background: set[asyncio.Task[Any]] = set()
        self.rollouts = Rollouts(resolved, self.spawn, metrics=metrics, state_path=rollout_state)
        """Modules with a running canary: their calls are split by the rollout's step."""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, poll_interval: float = 2.0) -> None:
        """Open connection pools and start envelope polling (inside the running loop)."""
        for client in self.clients.values():
            client.start()
        self.envelopes.start(self._fetch_envelope, poll_interval)
        self.rollouts.start()

    async def stop(self) -> None:
        """Stop polling, cancel mirrors, close pools."""
        await self.envelopes.stop()
        await self.rollouts.stop()
        for task in list(self.background):
            task.cancel()
        for client in self.clients.values():
            client.close()

    async def _fetch_envelope(self, module: str) -> tuple[int, bytes]:
        return await self.clients[module].get("/envelope", timeout=2.0)

    def _healthy(self, module: str, polled_at: float) -> None:
        """A poll found ``module`` Healthy: that ends an ejection begun before the poll."""
        if self.breakers[module].envelope_healthy(polled_at):
            _log.info("module %s: a Healthy envelope ends its ejection; next call probes", module)

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in the background (mirrors), keeping a reference until it ends."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- nodes ----------------------------------------------------------------------------------

    async def run_node(
        self, name: str, ctx: RequestContext, inputs: Tensors, *, final: bool = False
    ) -> Output:
        """Run node ``name`` on ``inputs`` (``final``: its output is the graph's answer)."""
        node = self.nodes[name]
        previous, ctx.current_node = ctx.current_node, name
        ctx.note("node", node=name, type=node.type)
        try:
            with self._span(
                f"node {name}", {"modulemesh.node": name, "modulemesh.node.type": node.type}
            ):
                return await self.handlers[node.type](self, node, ctx, inputs, final)
        finally:
            ctx.current_node = previous

    async def call(
        self,
        target: Target,
        ctx: RequestContext,
        inputs: Tensors,
        *,
        node: str,
        step: str,
        final: bool = False,
    ) -> Output:
        """Call a step's target: a module (with resilience) or another node."""
        if target.module is not None:
            return await self.call_module(
                target.module, ctx, inputs, node=node, step=step, final=final
            )
        return await self.run_node(str(target.node), ctx, inputs, final=final)

    def timeout_of(self, target: Target) -> float:
        """Seconds one call of ``target`` may take: the module's ``timeoutMs``, else (and for
        a node) the graph's ``callTimeoutMs``."""
        module = None if target.module is None else self.modules[target.module]
        timeout_ms = module.timeout_ms if module is not None else None
        return (timeout_ms or self.policy.call_timeout_ms) / 1000.0

    def condition(self, node: str, key: str | int) -> Condition:
        """The compiled condition of a node (switch case index, ``escalate``, ``accept``)."""
        return self.conditions[(node, key)]

    # -- module calls ---------------------------------------------------------------------------

    async def call_module(
        self,
        name: str,
        ctx: RequestContext,
        inputs: Tensors,
        *,
        node: str,
        step: str,
        final: bool = False,
    ) -> Output:
        """Call module ``name``, or its fallbacks, for one step of ``node``."""
        tried: list[str] = []
        current = name
        where = f"node {node!r} step {step!r}"
        while True:
            tried.append(current)
            refusal = self._refusal(current, ctx, where)
            if refusal is None:
                try:
                    return await self._attempts(current, ctx, inputs, node, step, where, final)
                except RouteError as exc:
                    if not exc.fallback:
                        raise
                    refusal = exc
            fallback = self.modules[current].fallback
            if fallback is None or fallback in tried:
                if refusal.status == 403:
                    refusal = RouteError(
                        403,
                        f"{refusal.message}; no cleared fallback, refused (fail closed)",
                        node=node, module=current,
                    )  # fmt: skip
                raise refusal
            ctx.note("fallback", node=node, step=step, module=current, to=fallback,
                     reason=refusal.message)  # fmt: skip
            if self.metrics is not None:
                kind = {403: "privacy", 503: "unavailable", 504: "timeout"}.get(
                    refusal.status, "error"
                )
                self.metrics.fallbacks.labels(self.graph, current, fallback, kind).inc()
            current = fallback

    def _refusal(self, module: str, ctx: RequestContext, where: str) -> RouteError | None:
        """Why ``module`` must not be called for this request (privacy, health), or None."""
        if ctx.tags:
            verdict = self.privacy.check(module, ctx.tags)
            if not verdict.allowed or verdict.dryrun or self.privacy.log_allowed:
                trace_id = _trace_id(ctx)
                self.privacy.record(module, ctx.tags, verdict, trace_id)
            if not verdict.allowed:
                ctx.note("privacy", module=module, decision="deny", reason=verdict.reason)
                return RouteError(403, f"{where}: {verdict.reason}", module=module, fallback=True)
            if verdict.dryrun:
                ctx.note("privacy", module=module, decision="dryrun-deny", reason=verdict.reason)
        if self.modules[module].fallback is not None:
            env = self.envelopes[module].latest()
            if env is not None and env.state in self.fallback_states:
                current = self.envelopes.state(module)
                if current.state in self.fallback_states:
                    return RouteError(
                        503,
                        f"{where}: module {module!r} is {current.state.value} by its envelope "
                        f"({current.reason or 'no reason given'})",
                        module=module, fallback=True,
                    )  # fmt: skip
        return None

    async def _attempts(
        self,
        module: str,
        ctx: RequestContext,
        inputs: Tensors,
        node: str,
        step: str,
        where: str,
        final: bool,
    ) -> Output:
        spec = self.modules[module]
        digest: bytes | None = None
        rollout = self.rollouts.get(module)
        measuring = rollout is not None and rollout.controller.recording
        noised = self.privacy.dp.get(module)
        if noised:
            # Never cached: a cached answer is the module's, before noise.
            if self.cache is not None:
                ctx.note("cache", node=node, step=step, module=module, result="bypass",
                         reason="a gate noises this module's outputs")  # fmt: skip
        elif (
            self.cache is not None
            and not measuring
            and (not ctx.tags or self.privacy.cacheable(ctx.tags))
        ):
            digest = input_digest(inputs)
            cached = self.cache.get(module, spec.version, digest)
            if self.metrics is not None:
                self.metrics.cache.labels(self.graph, "miss" if cached is None else "hit").inc()
            if cached is not None:
                ctx.note("cache", node=node, step=step, module=module, result="hit")
                return Output(cached, module, spec.confidence_output)
        elif self.cache is not None:
            ctx.note("cache", node=node, step=step, module=module, result="bypass",
                     reason="a rollout measures every call" if measuring
                     else "tagged request; a gate does not allow caching")  # fmt: skip
        # The module answers in the client's format only when nothing here needs the tensors:
        # explain reports the version, and the cache stores decoded outputs.
        # Noised outputs are decoded here: the module's own bytes must not leave the router.
        raw_ok = final and digest is None and ctx.explain is None and not noised
        answer_for = ctx.inputs.head if raw_ok else None
        client = self.clients[module]
        breaker = self.breakers[module]
        budget = self.budgets[module]
        retries = self.policy.retries
        call_timeout = (spec.timeout_ms or self.policy.call_timeout_ms) / 1000.0
        tags = ",".join(sorted(ctx.tags)) if ctx.tags else None
        budget.call()
        if noised:
            # Reserve before answer: the budget is spent (durably) before the module is
            # called, so no noisy answer can leave unaccounted, even if this process dies.
            for dp_gate, charge in await self.privacy.reserve(module, ctx.headers, _trace_id(ctx)):
                ctx.note("budget", module=module, gate=dp_gate.gate,
                         spentEpsilon=charge.spent_epsilon,
                         remainingEpsilon=charge.remaining_epsilon,
                         noise=dp_gate.noiser.scales())  # fmt: skip
        attempt = 0
        while True:
            attempt += 1
            remaining = ctx.remaining()
            if remaining <= 0:
                raise self.deadline_error(ctx, node, module)
            why = breaker.acquire()
            if why is not None:
                ctx.note("call", node=node, step=step, module=module, attempt=attempt,
                         outcome="ejected", reason=why)  # fmt: skip
                raise RouteError(503, f"{where}: module {module!r} {why}", module=module,
                                 fallback=True, retry_after=max(1, int(breaker.ejected_for() + 0.999)))  # fmt: skip
            generation = breaker.generation
            timeout = min(call_timeout, remaining)
            started = time.perf_counter()
            try:
                with self._span(f"call {module}", {
                    "modulemesh.module": module, "modulemesh.node": node,
                    "modulemesh.step": step, "modulemesh.attempt": attempt,
                }, kind=SpanKind.CLIENT):  # fmt: skip
                    if rollout is None:
                        outputs, version = await client.infer(
                            inputs, timeout=timeout, tags=tags,
                            hop_headers=self._hop_headers(ctx), where=where, final=answer_for,
                        )  # fmt: skip
                    else:  # split between stable and canary by the trace id
                        outputs, version = await rollout.infer(
                            client, inputs, key=_trace_id(ctx) or "", timeout=timeout,
                            tags=tags, hop_headers=self._hop_headers(ctx), where=where,
                            final=answer_for,
                        )  # fmt: skip
            except RouteError as exc:
                elapsed = time.perf_counter() - started
                if exc.breaker:
                    breaker.failure(generation)
                else:
                    breaker.release(generation)
                outcome = "timeout" if exc.status == 504 else "error"
                if self.metrics is not None:
                    self.metrics.call(module, outcome, elapsed)
                ctx.note("call", node=node, step=step, module=module, attempt=attempt,
                         outcome=outcome, status=exc.status, ms=round(elapsed * 1000, 3),
                         error=exc.message)  # fmt: skip
                if exc.status == 504 and timeout < call_timeout:
                    raise self.deadline_error(ctx, node, module) from None
                if exc.retryable and attempt <= retries.attempts and budget.try_retry():
                    backoff = retries.backoff_ms / 1000.0 * (2 ** (attempt - 1))
                    backoff *= 0.5 + random.random()
                    if ctx.remaining() > backoff:
                        ctx.note("retry", node=node, step=step, module=module,
                                 attempt=attempt + 1, backoffMs=round(backoff * 1000, 3))  # fmt: skip
                        await asyncio.sleep(backoff)
                        continue
                exc.node = node
                raise
            except BaseException:
                breaker.release(generation)
                raise
            elapsed = time.perf_counter() - started
            breaker.success(generation)
            if self.metrics is not None:
                self.metrics.call(module, "ok", elapsed)
                if isinstance(inputs, ClientInputs):
                    self.metrics.forwarded_request.inc()
            if ctx.explain is not None:
                ctx.note("call", node=node, step=step, module=module, attempt=attempt,
                         outcome="ok", version=version, ms=round(elapsed * 1000, 3))  # fmt: skip
            if isinstance(outputs, RawAnswer):
                return Output(None, module, spec.confidence_output, raw=outputs)
            for dp_gate in noised or ():
                try:
                    outputs = dp_gate.noiser.apply(outputs)
                except NoiseError as exc:
                    raise RouteError(502, f"{where}: {exc} (gate {dp_gate.gate!r}); the answer "
                                     "is withheld", node=node, module=module,
                                     fallback=False) from None  # fmt: skip
            if digest is not None and self.cache is not None:
                self.cache.put(module, spec.version, digest, outputs)
            return Output(outputs, module, spec.confidence_output)

    def deadline_error(
        self, ctx: RequestContext, node: str, module: str | None = None
    ) -> RouteError:
        """504 naming the node (and module) where the request's deadline ran out."""
        at = f" calling module {module!r}" if module else ""
        return RouteError(
            504,
            f"deadline of {ctx.timeout_ms:.0f} ms exceeded in node {node!r}{at}",
            node=node, module=module, fallback=False,
        )  # fmt: skip

    # -- telemetry ------------------------------------------------------------------------------

    def _span(
        self, name: str, attributes: dict[str, Any], kind: SpanKind = SpanKind.INTERNAL
    ) -> contextlib.AbstractContextManager[Any]:
        """A span when tracing is exported; else a shared no-op (nothing allocated per call)."""
        if self.tracer is None:
            return _NO_SPAN
        return self.tracer.start_as_current_span(name, kind=kind, attributes=attributes)

    def _hop_headers(self, ctx: RequestContext) -> list[tuple[bytes, bytes]]:
        """Trace context, then the client headers the graph propagates, for one module call."""
        if self.tracer is None:
            hop = ctx.trace_headers
        else:
            carrier: dict[str, str] = {}
            inject(carrier)
            hop = [(k.encode(), v.encode()) for k, v in carrier.items()]
        return hop + ctx.forwarded_headers if ctx.forwarded_headers else hop


def _trace_id(ctx: RequestContext) -> str | None:
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return f"{span_context.trace_id:032x}"
    for name, value in ctx.trace_headers:
        if name == headers.TRACEPARENT.encode():
            from modulemesh.telemetry import trace_id_from_traceparent

            return trace_id_from_traceparent(value)
    return None


def _compile_conditions(nodes: list[Node]) -> dict[tuple[str, str | int], Condition]:
    out: dict[tuple[str, str | int], Condition] = {}
    for node in nodes:
        if isinstance(node, SwitchNode):
            for i, case in enumerate(node.cases):
                out[(node.name, i)] = compile_condition(case.when, Environment.SWITCH)
        elif isinstance(node, CascadeNode):
            out[(node.name, "escalate")] = compile_condition(
                node.escalate_when, Environment.ESCALATE
            )
        elif isinstance(node, ValidateNode):
            out[(node.name, "accept")] = compile_condition(node.accept_when, Environment.ACCEPT)
    return out
