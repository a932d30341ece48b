"""The sidecar as a raw ASGI application: guard, proxy, probes, envelope and metrics.

A raw ASGI callable rather than a framework, because it sits on every request's path: one
pass over the request headers builds the upstream request head, the body is forwarded as it
arrives, the response is forwarded as it arrives, and the envelope header is a cached value.

Routes: ``/v2/...`` is proxied to the runtime; ``/livez``, ``/readyz``, ``/envelope`` and
``/metrics`` are served here. Every response carries ``x-modulemesh-envelope``.

Accounting: guard denials are counted as ``denials`` (dry-run would-be denials too), not as
requests. Requests that reach the runtime (or fail trying) are timed from the moment the
sidecar receives them until their last body byte is handed to the server. Errors are 5xx
answers of the runtime, timeouts (504) and an unreachable runtime (502); client 4xx are not.
Confidence is sampled from ``200`` answers of ``.../infer`` whose declared ``content-length``
is at most ``confidence_max_bytes``: the body is still forwarded chunk by chunk as it
arrives, and a reference to it is kept for decoding at the next envelope refresh. Larger or
length-less (chunked) responses are streamed without a sample.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modulemesh import headers, oip
from modulemesh.audit import Decision
from modulemesh.httpserver import (
    ClientDisconnected,
    Companion,
    Receive,
    Scope,
    Send,
    run_lifespan,
)
from modulemesh.privacy import Classifier
from modulemesh.sidecar.config import SidecarConfig
from modulemesh.sidecar.guard import Guard
from modulemesh.sidecar.health import Health
from modulemesh.sidecar.metrics import registry_for
from modulemesh.sidecar.upstream import BodySource, Pool, UpstreamError, UpstreamTimeout
from modulemesh.sidecar.watch import RuntimeWatch
from modulemesh.telemetry import extract, inject, new_traceparent, trace_id_from_traceparent

__all__ = ["SidecarApp"]


_log = logging.getLogger("modulemesh.sidecar")

_HOP_BY_HOP = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
    }
)
"""Request headers not forwarded (``host`` is rewritten to the runtime's)."""

_RESPONSE_DROP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", headers.ENVELOPE.encode()}
)
"""Response headers not forwarded: hop-by-hop, and any envelope not set by this sidecar."""

_TRACEPARENT = headers.TRACEPARENT.encode()
_TRACESTATE = headers.TRACESTATE.encode()
_TRACE_CONTEXT = frozenset({_TRACEPARENT, _TRACESTATE})
_TRACE_KEYS = (headers.TRACEPARENT, headers.TRACESTATE)
_DEADLINE = headers.DEADLINE_MS.encode()
_NO_FIELDS: dict[str, str] = {}
_NO_TAGS: frozenset[str] = frozenset()
_CONTENT_LENGTH = b"content-length"
_QUEUE_DEPTH = headers.QUEUE_DEPTH.encode()
_PROVIDER = headers.PROVIDER.encode()
_MODEL_VERSION = headers.MODEL_VERSION.encode()
_HEADER_LENGTH = oip.HEADER_LENGTH.encode()
_ENVELOPE = headers.ENVELOPE.encode()
_JSON = b"application/json"
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class SidecarApp:
    """ASGI app of one module's sidecar; upstream pool and watcher start with the lifespan."""

    def __init__(self, config: SidecarConfig, *, tracer: Tracer | None = None) -> None:
        self.config = config
        self.health = Health(config)
        self.guard = Guard(config.module, config.clearance, config.mode)
        self.classifier = Classifier.from_gates(config.gates.values())
        """Headers -> tags, the router's own implementation over the same gates."""
        self._deciding = self.classifier.raw_headers | _TRACE_CONTEXT | {_DEADLINE, _HEADER_LENGTH}
        """Headers whose every field line is read (joined) because they decide something."""
        self.registry = registry_for(self.health)
        self._tracer = tracer
        self._pool: Pool | None = None
        self._watch: RuntimeWatch | None = None
        self._host = config.upstream.host_header
        self._routes: dict[str, Callable[[], tuple[int, bytes, bytes]]] = {
            "/livez": self._livez,
            "/readyz": self._readyz,
            "/envelope": self._envelope,
            "/metrics": self._metrics,
        }

    # -- ASGI entry ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith("/v2"):
                await self._proxy(scope, receive, send)
                return
            route = self._routes.get(path)
            if route is None:
                await self._respond(send, 404, _error(f"no route {path} on the sidecar"))
                return
            status, body, content_type = route()
            await self._respond(send, status, body, content_type)
        elif kind == "lifespan":
            await run_lifespan(receive, send, self.startup, self.shutdown)

    def grpc_companions(self) -> list[Companion]:
        """The guarded gRPC relay to the runtime's gRPC port, when ``grpc_port`` is set: the
        same guard, classifier and health as this app's HTTP proxy."""
        config = self.config
        if not config.grpc_port:
            return []
        from modulemesh.grpc.relay import MAX_MESSAGE_BYTES, GuardedRelay, RelayServer
        from modulemesh.grpc.server import listen_address

        relay = GuardedRelay(
            module=config.module,
            guard=self.guard,
            classifier=self.classifier,
            health=self.health,
            upstream=config.grpc_upstream,
            timeout=config.upstream_timeout,
            max_message_bytes=MAX_MESSAGE_BYTES,
            audit_allow=config.audit_allow,
        )
        address = listen_address(config.host, config.grpc_port)
        return [RelayServer(relay, address, MAX_MESSAGE_BYTES)]

    async def startup(self) -> None:
        """Open the upstream pool and start watching the runtime (needs a running loop)."""
        self._pool = Pool(self.config.upstream)
        self._watch = RuntimeWatch(self._pool, self.health.runtime, self.config.poll_interval)
        self._watch.start()

    async def shutdown(self) -> None:
        """Stop watching and close idle upstream connections."""
        if self._watch is not None:
            await self._watch.stop()
        if self._pool is not None:
            self._pool.close()

    # -- local routes -------------------------------------------------------------------------

    def _livez(self) -> tuple[int, bytes, bytes]:
        return 200, b'{"live":true}', _JSON

    def _readyz(self) -> tuple[int, bytes, bytes]:
        runtime = self.health.runtime
        if runtime.ready is True:
            return 200, b'{"ready":true}', _JSON
        body = json.dumps({"ready": False, "reason": runtime.reason}).encode()
        return 503, body, _JSON

    def _envelope(self) -> tuple[int, bytes, bytes]:
        return 200, self.health.envelope(force=True).to_json().encode(), _JSON

    def _metrics(self) -> tuple[int, bytes, bytes]:
        return 200, generate_latest(self.registry), CONTENT_TYPE_LATEST.encode()

    async def _respond(
        self,
        send: Send,
        status: int,
        body: bytes,
        content_type: bytes = _JSON,
        *,
        close: bool = False,
    ) -> None:
        headers = [
            (b"content-type", content_type),
            (_CONTENT_LENGTH, str(len(body)).encode()),
            (_ENVELOPE, self.health.header()),
        ]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- proxy --------------------------------------------------------------------------------

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        deciding = self._deciding
        lines: list[bytes] = []
        decisive: list[tuple[bytes, bytes]] = []
        content_length = None
        for name, value in scope["headers"]:
            if name in _HOP_BY_HOP:
                continue
            if name in deciding:
                decisive.append((name, value))
                if name in _TRACE_CONTEXT:
                    continue  # passed on below, once and valid
            if name == _CONTENT_LENGTH:
                content_length = value
            lines.append(name + b": " + value + b"\r\n")
        # Repeated field lines are one comma-joined list (RFC 9110 §5.3), as in the router.
        fields = headers.fields(decisive) if decisive else _NO_FIELDS
        traceparent = fields.get(headers.TRACEPARENT)
        trace_id = trace_id_from_traceparent(traceparent)

        if self._tracer is None:
            if trace_id is not None:
                lines.append(_TRACEPARENT + b": " + fields[headers.TRACEPARENT].encode() + b"\r\n")
                if (tracestate := fields.get(headers.TRACESTATE)) is not None:
                    lines.append(_TRACESTATE + b": " + tracestate.encode() + b"\r\n")
            await self._forward(
                scope, receive, send, started, lines, fields, trace_id, content_length
            )
            return
        carrier = {}
        if trace_id is not None:
            carrier = {k: v for k in _TRACE_KEYS if (v := fields.get(k)) is not None}
        with self._tracer.start_as_current_span(
            f"sidecar {scope['method']} {scope['path']}",
            context=extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"modulemesh.module": self.config.module, "url.path": scope["path"]},
        ) as span:
            injected: dict[str, str] = {}
            inject(injected)
            for key, val in injected.items():
                lines.append(f"{key}: {val}\r\n".encode("latin-1"))
            status = await self._forward(
                scope, receive, send, started, lines, fields, None, content_length
            )
            span.set_attribute("http.response.status_code", status)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        started: float,
        lines: list[bytes],
        fields: dict[str, str],
        trace_id: str | None,
        content_length: bytes | None,
    ) -> int:
        """Guard, then proxy. ``trace_id`` is the request's (``None`` when a span is current
        or the request had no valid ``traceparent``: then one is made for its audit record)."""
        config = self.config
        health = self.health
        try:
            tags = self.classifier.classify(fields) if fields else _NO_TAGS
            deadline = headers.single(headers.DEADLINE_MS, fields.get(headers.DEADLINE_MS))
            # the runtime frames the body by it: two different values must not reach it
            headers.single(oip.HEADER_LENGTH, fields.get(oip.HEADER_LENGTH))
        except headers.HeaderError as exc:
            await self._respond(send, 400, _error(exc.message))
            return 400
        if tags:
            verdict = self.guard.check(tags)
            denied = verdict.decision is not Decision.ALLOW
            if denied or config.audit_allow:
                if trace_id is None and not trace.get_current_span().get_span_context().is_valid:
                    # No trace context: make one, so the record and the runtime share it.
                    traceparent = new_traceparent()
                    lines.append(_TRACEPARENT + b": " + traceparent.encode() + b"\r\n")
                    trace_id = trace_id_from_traceparent(traceparent)
                self.guard.record(verdict, trace_id)
            health.record_decision(verdict.decision.value, denied)
            if not verdict.forwards:
                await self._respond(send, 403, _error(verdict.reason))
                return 403

        message = await receive()
        body: bytes = message.get("body", b"")
        more_body: bool = message.get("more_body", False)
        chunked = False
        if content_length is None:
            if more_body:
                chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            elif body or scope["method"] in _WITH_BODY:
                lines.append(b"content-length: " + str(len(body)).encode() + b"\r\n")
        query: bytes = scope.get("query_string", b"")
        target: bytes = scope.get("raw_path") or scope["path"].encode()
        if query:
            target += b"?" + query
        head = b"".join(
            (
                scope["method"].encode(),
                b" ",
                target,
                b" HTTP/1.1\r\nhost: ",
                self._host,
                b"\r\n",
                *lines,
                b"\r\n",
            )
        )
        more: BodySource | None = None
        body_open = more_body
        """The client's body is still arriving: a timeout or disconnect now is the client's."""
        if more_body:

            async def more() -> tuple[bytes, bool]:
                nonlocal body_open
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    raise ClientDisconnected
                body_open = msg.get("more_body", False)
                return msg.get("body", b""), body_open

        timeout = config.upstream_timeout
        if deadline is not None:
            with contextlib.suppress(ValueError):
                timeout = min(timeout, max(float(deadline) / 1000.0, 0.001))

        assert self._pool is not None, "sidecar used before its lifespan started"
        status = 502
        error = True
        health.in_flight += 1
        try:
            try:
                conn = await self._pool.request(
                    head, body, timeout=timeout, more=more, chunked=chunked
                )
            except UpstreamTimeout as exc:
                if body_open:
                    # the runtime waited for a body the client trickles or withholds: a slow
                    # client (408, as the server answers one), not a slow module (504)
                    status, error = 408, False
                    await self._respond(
                        send, 408, _error("request body not received in time"), close=True
                    )
                    return status
                status = 504
                await self._respond(send, 504, _error(f"module '{config.module}': {exc}"))
                return status
            except UpstreamError as exc:
                if body_open:
                    # the runtime stopped waiting for a body the client is still trickling
                    # (its own body timeout): the client's 408, and no sign the runtime is down
                    _log.warning("module %s: runtime gave up on a request body still arriving "
                                 "from the client: %s", config.module, exc)  # fmt: skip
                    status, error = 408, False
                    await self._respond(
                        send, 408, _error("request body not received in time"), close=True
                    )
                    return status
                assert self._watch is not None
                self._watch.unreachable(str(exc))
                await self._respond(send, 502, _error(f"module '{config.module}': {exc}"))
                return status
            try:
                status = conn.status
                error = status >= 500
                out: list[tuple[bytes, bytes]] = []
                queue_depth = provider = version = header_length = length = None
                for name, value in conn.headers:
                    if name in _RESPONSE_DROP:
                        continue
                    if name == _CONTENT_LENGTH:
                        length = value
                    elif name == _QUEUE_DEPTH:
                        queue_depth = value
                    elif name == _PROVIDER:
                        provider = value
                    elif name == _MODEL_VERSION:
                        version = value
                    elif name == _HEADER_LENGTH:
                        header_length = value
                    out.append((name, value))
                health.note_headers(queue_depth, provider, version)
                out.append((_ENVELOPE, health.header()))
                sample = (
                    status == 200
                    and length is not None
                    and health.wants_confidence
                    and length.isdigit()
                    and int(length) <= config.confidence_max_bytes
                    and scope["path"].endswith("/infer")
                )
                await send({"type": "http.response.start", "status": status, "headers": out})
                if conn.complete:
                    data = await conn.read()
                    await send({"type": "http.response.body", "body": data})
                    if sample:
                        health.offer_confidence(data, header_length)
                else:
                    kept: list[bytes] = []
                    while data := await conn.read():
                        if sample:
                            kept.append(data)
                        await send({"type": "http.response.body", "body": data, "more_body": True})
                    await send({"type": "http.response.body", "body": b""})
                    if sample:
                        health.offer_confidence(b"".join(kept), header_length)
            except UpstreamError as exc:
                error = True
                status = 504 if isinstance(exc, UpstreamTimeout) else 502
                _log.warning("module %s: response from runtime broke off: %s", config.module, exc)
            finally:
                conn.release()
        except ClientDisconnected:
            status, error = 499, False
        finally:
            health.in_flight -= 1
            # a request whose body never arrived whole says nothing about the module's latency
            health.record(time.perf_counter() - started, status, error, in_window=not body_open)
        return status


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()
