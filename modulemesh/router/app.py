"""The router as a raw ASGI application: the graph served as an OIP v2 model.

Routes: ``POST /v2/models/{graph}/infer``, ``GET /v2/models/{graph}`` (metadata),
``GET /v2/models/{graph}/ready`` (every module reachable), ``GET /v2/health/live|ready``,
``GET /v2``, ``GET /envelopes`` (every module's latest envelope and breaker state),
``GET /rollouts`` (every canary's rollout: phase, step, share, figures), ``GET /capture``
(what ``spec.capture`` wrote and left out) and
``GET /metrics`` (Prometheus). A raw ASGI callable rather than a framework because the
infer route is on every request's path: one pass over the headers, no dependency injection,
no request object. Every error is ``{"error": "..."}`` with a 4xx/5xx status; nothing a
client sends can crash the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.trace import SpanKind, Tracer

from modulemesh import __version__, headers, oip
from modulemesh.api.resolved import ResolvedGraph
from modulemesh.httpserver import (
    BodyTooLarge,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    read_body,
    run_lifespan,
)
from modulemesh.privacy import Inspection
from modulemesh.privacy.ledger import Ledger
from modulemesh.rollout.capture import Capture
from modulemesh.router.client import rename_answer
from modulemesh.router.context import RequestContext
from modulemesh.router.errors import RouteError
from modulemesh.router.executor import Executor
from modulemesh.router.metadata import GraphMetadata
from modulemesh.router.metrics import RouterMetrics
from modulemesh.router.payload import ClientInputs
from modulemesh.router.privacy import BudgetRefused
from modulemesh.router.shedding import Shedder, parse_priority
from modulemesh.telemetry import extract, new_traceparent, trace_id_from_traceparent

__all__ = ["MAX_BODY", "RouterApp"]


_log = logging.getLogger("modulemesh.router")

_JSON = b"application/json"
_TRACEPARENT = headers.TRACEPARENT.encode()
_TRACESTATE = headers.TRACESTATE.encode()
_HEADER_LENGTH = oip.HEADER_LENGTH.encode()
MAX_BODY = 64 * 1024 * 1024
_SCAN_INLINE = 64 * 1024
"""Bodies up to this size are scanned by content detectors on the event loop (a thread hop
costs more than their scan); larger ones on a worker thread."""
_DEADLINE_GRACE = 0.05
"""Seconds the whole-request guard waits past the deadline, so per-call timeouts (which
name the module) normally fire first."""


class RouterApp:
    """ASGI app serving one resolved graph."""

    def __init__(
        self,
        resolved: ResolvedGraph,
        *,
        tracer: Tracer | None = None,
        poll_interval: float = 2.0,
        ledger: Ledger | None = None,
        rollout_state: Path | None = None,
    ) -> None:
        self.resolved = resolved
        self.graph = resolved.name
        self.metrics = RouterMetrics(resolved.name)
        self.executor = Executor(
            resolved, tracer=tracer, metrics=self.metrics, ledger=ledger,
            rollout_state=rollout_state,
        )  # fmt: skip
        self.shedder = Shedder(resolved.spec.policy.shedding)
        shedder = self.shedder
        self.metrics.in_flight.labels(self.graph).set_function(lambda: shedder.in_flight)
        self.default_priority = resolved.spec.policy.shedding.default_priority
        self.metadata = GraphMetadata(self.executor)
        self.tracer = tracer
        self.poll_interval = poll_interval
        self.started = False
        self._infer_path = f"/v2/models/{self.graph}/infer"
        self._model_path = f"/v2/models/{self.graph}"
        self._timeout_ms = float(resolved.spec.policy.timeout_ms)
        self._propagate = frozenset(h.encode() for h in resolved.spec.policy.propagate_headers)
        self.capture = Capture.of(resolved)
        """A sample of answered requests for ``modulemesh replay`` (``spec.capture``)."""

    # -- ASGI entry ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await run_lifespan(receive, send, self._startup, self._shutdown)
            return
        if kind != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path == self._infer_path:
                if method != "POST":
                    await _respond(send, 405, _error(f"{path} takes POST"))
                    return
                await self._infer(scope, receive, send)
            elif (
                path.startswith("/v2/models/")
                and not path.startswith(self._model_path + "/")
                and path != self._model_path
            ):
                name = path[len("/v2/models/") :].split("/", 1)[0]
                await _respond(
                    send, 404,
                    _error(f"model {name!r} not found: this router serves graph {self.graph!r} "
                           f"(POST {self._infer_path})"),
                )  # fmt: skip
            elif method != "GET":
                await _respond(send, 405, _error(f"{path} takes GET"))
            elif path == self._model_path:
                await _respond(send, 200, orjson.dumps(await self.metadata.document()))
            elif path == self._model_path + "/ready":
                await self._model_ready(send)
            elif path == "/v2/health/live":
                await _respond(send, 200, b'{"live":true}')
            elif path == "/v2/health/ready":
                ok = self.started
                await _respond(
                    send, 200 if ok else 503, b'{"ready":%s}' % (b"true" if ok else b"false")
                )
            elif path == "/v2":
                body = {
                    "name": "modulemesh-router",
                    "version": __version__,
                    "extensions": ["binary_tensor_data"],
                }
                await _respond(send, 200, orjson.dumps(body))
            elif path == "/envelopes":
                await _respond(send, 200, orjson.dumps(self.envelopes()))
            elif path == "/capture":
                capture = self.capture.snapshot() if self.capture is not None else None
                await _respond(send, 200, orjson.dumps({"graph": self.graph, "capture": capture}))
            elif path == "/rollouts":
                await _respond(send, 200, orjson.dumps(self.executor.rollouts.snapshot()))
            elif path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                await _respond(
                    send, 200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST.encode()
                )
            else:
                await _respond(send, 404, _error(f"no route {path} on the router"))
        except RouteError as exc:
            await _respond(send, exc.status, _error(exc.message))

    async def _startup(self) -> None:
        self.executor.start(self.poll_interval)
        self.started = True

    async def _shutdown(self) -> None:
        self.started = False
        await self.executor.stop()

    # -- infer --------------------------------------------------------------------------------

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        # Repeated field lines are one comma-joined list (RFC 9110 §5.3): a later line never
        # replaces an earlier one, and a non-list header sent twice differently is refused.
        request_headers = headers.fields(scope["headers"])
        forwarded: list[tuple[bytes, bytes]] = []
        if propagate := self._propagate:
            forwarded = [(name, value) for name, value in scope["headers"] if name in propagate]
        try:
            raw_priority = headers.single(headers.PRIORITY, request_headers.get(headers.PRIORITY))
            raw_deadline = headers.single(
                headers.DEADLINE_MS, request_headers.get(headers.DEADLINE_MS)
            )
            header_length = headers.single(
                oip.HEADER_LENGTH, request_headers.get(oip.HEADER_LENGTH)
            )
            explain = headers.single(headers.EXPLAIN, request_headers.get(headers.EXPLAIN))
            tags = self.executor.privacy.classify(request_headers)
        except headers.HeaderError as exc:
            await self._finish(send, started, 400, _error(exc.message))
            return
        trace_headers = _trace_headers(request_headers)
        priority = parse_priority(raw_priority, self.default_priority)
        if priority is None:
            await self._finish(send, started, 400, _error(
                f"{headers.PRIORITY} must be critical, standard or sheddable, got {raw_priority!r}"
            ))  # fmt: skip
            return
        if not self.shedder.admit(priority):
            self.metrics.shed.labels(self.graph, priority.value).inc()
            limit = self.shedder.limits[priority]
            await self._finish(send, started, 429, _error(
                f"graph {self.graph!r} is saturated: {self.shedder.in_flight} requests in flight, "
                f"the limit for priority {priority.value!r} is {limit}; retry later"
            ), retry_after=1)  # fmt: skip
            return
        try:
            await self._admitted(
                receive, send, started, request_headers, tags, priority, raw_deadline,
                header_length, explain in ("1", "true"), trace_headers, forwarded,
            )  # fmt: skip
        finally:
            self.shedder.done()

    async def _admitted(
        self,
        receive: Receive,
        send: Send,
        started: float,
        request_headers: dict[str, str],
        tags: frozenset[str],
        priority: Any,
        raw_deadline: str | None,
        header_length: str | None,
        explain: bool,
        trace_headers: list[tuple[bytes, bytes]],
        forwarded_headers: list[tuple[bytes, bytes]],
    ) -> None:
        try:
            body = await read_body(receive, MAX_BODY)
        except BodyTooLarge:
            await self._finish(
                send, started, 413, _error(f"request body larger than {MAX_BODY} bytes")
            )
            return
        except ClientDisconnected:
            raise asyncio.CancelledError("client disconnected") from None
        timeout_ms = self._timeout_ms
        if raw_deadline is not None:
            try:
                deadline_ms = float(raw_deadline)
            except ValueError:
                deadline_ms = math.nan
            # NaN would read as an expired deadline, and zero or less is one before any work:
            # a client's mistake (400), not the graph running out of time (504).
            if not math.isfinite(deadline_ms) or deadline_ms <= 0:
                await self._finish(send, started, 400, _error(
                    f"{headers.DEADLINE_MS} must be a positive number of milliseconds, "
                    f"got {raw_deadline!r}"
                ))  # fmt: skip
                return
            timeout_ms = min(timeout_ms, deadline_ms)
        try:
            # Only the JSON part is parsed here; tensors are decoded if and when a node needs
            # them, and a call whose inputs are the client's forwards these bytes as they are.
            request = ClientInputs.parse(body, header_length)
        except oip.ProtocolError as exc:
            await self._finish(send, started, exc.status, _error(f"bad request: {exc.message}"))
            return
        inspection: Inspection | None = None
        privacy = self.executor.privacy
        if privacy.scanner:
            # Content detectors run before any module can be called, on what the client
            # sent: their tags join the declared ones, a deny refuses, a redaction replaces
            # the request every step sees.
            try:
                if len(body) > _SCAN_INLINE:
                    # Scanning costs up to ~1 ms of CPU per KB of hostile text: a big body is
                    # scanned on a worker thread, so the event loop keeps serving other
                    # requests and probes (it gets the GIL at every switch interval).
                    inspection = await asyncio.to_thread(
                        privacy.scanner.inspect, request.head, request.header_length
                    )
                else:
                    inspection = privacy.scanner.inspect(request.head, request.header_length)
            except oip.ProtocolError as exc:
                await self._finish(send, started, exc.status, _error(f"bad request: {exc.message}"))
                return
            if inspection.findings:
                privacy.record_inspection(
                    inspection, trace_id_from_traceparent(trace_headers[0][1])
                )
                content_note = {
                    "event": "content",
                    "findings": [finding.explain() for finding in inspection.findings],
                    "redacted": inspection.redacted,
                }
                if inspection.denied is not None:
                    await self._finish(send, started, 403, _error(
                        inspection.refusal(), [content_note] if explain else None
                    ))  # fmt: skip
                    return
                tags = tags | inspection.tags
                if inspection.body is not None:
                    length = inspection.header_length
                    request = ClientInputs.parse(
                        inspection.body, None if length is None else str(length)
                    )
        head = request.head
        ctx = RequestContext(
            inputs=request,
            headers=request_headers,
            tags=tags,
            priority=priority,
            parameters=head.parameters,
            timeout_ms=timeout_ms,
            explain=explain,
            trace_headers=trace_headers,
            forwarded_headers=forwarded_headers,
        )
        if inspection is not None and inspection.findings:
            ctx.note("content", findings=[f.explain() for f in inspection.findings],
                     redacted=inspection.redacted)  # fmt: skip
        with self._server_span(request_headers):
            try:
                async with asyncio.timeout(max(0.0, ctx.remaining()) + _DEADLINE_GRACE):
                    output = await self.executor.run_node(
                        self.resolved.spec.routing.entry, ctx, request, final=True
                    )
                if output.raw is not None:
                    # One module's answer, already holding the client's outputs in the
                    # client's format: only the model name changes.
                    response_body, length = rename_answer(output.raw, output.module, self.graph)
                    self.metrics.forwarded_answer.inc()
                else:
                    names = head.output_names(list(output.tensors))
                    outputs = {name: output.tensors[name] for name in names}
                    parameters: dict[str, Any] = {}
                    if ctx.explain is not None:
                        parameters["modulemesh_explain"] = {
                            "graph": self.graph,
                            "tags": sorted(ctx.tags),
                            "priority": priority.value,
                            "path": ctx.explain,
                            "ms": round((time.perf_counter() - started) * 1000, 3),
                        }
                    response_body, length = oip.encode_response(
                        oip.InferResponse(self.graph, outputs, id=head.id, parameters=parameters),
                        head.binary_outputs(),
                    )
            except TimeoutError:
                late = self.executor.deadline_error(
                    ctx, ctx.current_node or self.resolved.spec.routing.entry
                )
                await self._finish(send, started, 504, _error(late.message, ctx.explain))
                return
            except RouteError as exc:
                if exc.status == 400 and exc.module is not None:
                    # A module refused forwarded client bytes: if the client's tensors are
                    # malformed, say so as the router would have had it decoded them first.
                    exc = request.problem() or exc
                body_bytes = _error(exc.message, ctx.explain, _budget_of(exc))
                await self._finish(
                    send, started, exc.status, body_bytes, retry_after=exc.retry_after,
                    extra=_budget_headers(exc),
                )  # fmt: skip
                return
            except oip.ProtocolError as exc:
                await self._finish(send, started, exc.status, _error(exc.message))
                return
            except Exception as exc:  # a bug must not take the server down
                _log.exception("internal error in graph %s", self.graph)
                where = ctx.current_node or "router"
                await self._finish(
                    send, started, 500, _error(f"internal error in node {where!r}: {exc!r}")
                )
                return
        if self.capture is not None:
            trace_id = trace_id_from_traceparent(trace_headers[0][1]) or ""
            self.capture.offer(trace_id, ctx.tags, request, head.parameters, output)
        extra = None if length is None else [(_HEADER_LENGTH, b"%d" % length)]
        content_type = _JSON if length is None else b"application/octet-stream"
        await self._finish(
            send, started, 200, response_body, content_type=content_type, extra=extra
        )

    @contextlib.contextmanager
    def _server_span(self, request_headers: dict[str, str]) -> Iterator[None]:
        if self.tracer is None:
            yield
            return
        with self.tracer.start_as_current_span(
            f"graph {self.graph}", context=extract(request_headers), kind=SpanKind.SERVER,
            attributes={"modulemesh.graph": self.graph},
        ):  # fmt: skip
            yield

    async def _finish(
        self,
        send: Send,
        started: float,
        status: int,
        body: bytes,
        *,
        content_type: bytes = _JSON,
        extra: list[tuple[bytes, bytes]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        more = list(extra or [])
        if retry_after is not None:
            more.append((b"retry-after", str(retry_after).encode()))
        await _respond(send, status, body, content_type, more)
        self.metrics.request(status, time.perf_counter() - started)

    # -- status endpoints ---------------------------------------------------------------------

    def envelopes(self) -> dict[str, Any]:
        """``GET /envelopes``: every module's latest envelope and breaker state."""
        snapshot = self.executor.envelopes.snapshot()
        for name, entry in snapshot.items():
            entry["breaker"] = self.executor.breakers[name].snapshot()
            entry["endpoint"] = self.executor.clients[name].endpoint
            if (rollout := self.executor.rollouts.get(name)) is not None:
                entry["rollout"] = rollout.summary()  # copied into the graph's status
        return {
            "graph": self.graph,
            "namespace": self.resolved.namespace,
            "generation": self.resolved.generation,
            "time": time.time(),
            "modules": snapshot,
            "compliance": self.executor.privacy.compliance(),
        }

    async def _model_ready(self, send: Send) -> None:
        await self.executor.envelopes.poll_once(self.executor._fetch_envelope, self.poll_interval)
        down = {
            name: entry.error or "no envelope received yet"
            for name, entry in self.executor.envelopes.modules.items()
            if entry.error or entry.latest() is None
        }
        status = 200 if not down and self.started else 503
        await _respond(send, status, orjson.dumps({"ready": status == 200, "notReady": down}))


def _trace_headers(request_headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """The W3C trace context passed to modules: the client's when it sent one valid
    ``traceparent``, else a fresh one, so every audit record (router and sidecars alike) and
    every log of the request carry the same trace id even with no trace exporter."""
    traceparent = request_headers.get(headers.TRACEPARENT)
    if trace_id_from_traceparent(traceparent) is None:
        return [(_TRACEPARENT, new_traceparent().encode())]
    assert traceparent is not None
    out = [(_TRACEPARENT, traceparent.encode("latin-1"))]
    if (tracestate := request_headers.get(headers.TRACESTATE)) is not None:
        out.append((_TRACESTATE, tracestate.encode("latin-1")))
    return out


def _error(
    message: str,
    explain: list[dict[str, Any]] | None = None,
    budget: dict[str, Any] | None = None,
) -> bytes:
    body: dict[str, Any] = {"error": message}
    if budget is not None:
        body["budget"] = budget
    if explain is not None:
        body["explain"] = explain
    return orjson.dumps(body)


def _budget_of(exc: RouteError) -> dict[str, Any] | None:
    return exc.budget if isinstance(exc, BudgetRefused) else None


def _budget_headers(exc: RouteError) -> list[tuple[bytes, bytes]] | None:
    """A budget refusal's remaining budget and reset time as headers (``retry-after`` too)."""
    if not isinstance(exc, BudgetRefused):
        return None
    remaining = exc.budget["remaining"]
    return [
        (headers.BUDGET_REMAINING.encode(),
         f"epsilon={remaining['epsilon']:g};delta={remaining['delta']:g}".encode()),
        (headers.BUDGET_RESET.encode(), exc.budget["resetAt"].encode()),
    ]  # fmt: skip


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = _JSON,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    response_headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    if extra:
        response_headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})
