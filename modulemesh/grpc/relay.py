"""The sidecar's gRPC port: every call of ``inference.GRPCInferenceService``, guarded, relayed
to the runtime's gRPC endpoint.

The guard is the HTTP port's: the request's tags come from its gRPC metadata, read by the
shared :class:`modulemesh.privacy.Classifier` exactly as HTTP headers are (every value of a
key joined, as repeated HTTP field lines are, RFC 9110 §5.3), and checked by the same
:class:`~modulemesh.sidecar.guard.Guard`. A denial ends the call with ``PERMISSION_DENIED``
naming the tag, and every decision on a tagged call is an audit record, as on HTTP. Messages
are relayed as bytes, never decoded: the runtime checks them, and its status and details come
back as they are. Each call is recorded in the health envelope like an HTTP request.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import grpc

from modulemesh import headers
from modulemesh.audit import Decision
from modulemesh.grpc.server import (
    SERVICE,
    GrpcServer,
    abort,
    message_options,
    request_headers,
)
from modulemesh.privacy import Classifier
from modulemesh.sidecar.guard import Guard
from modulemesh.sidecar.health import Health
from modulemesh.telemetry import new_traceparent, trace_id_from_traceparent

__all__ = ["HTTP_STATUS", "MAX_MESSAGE_BYTES", "GuardedRelay", "RelayServer"]

_PREFIX = f"/{SERVICE}/"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest message relayed either way: the runtime's own default body limit (gRPC's default
is 4 MiB); the runtime refuses what exceeds its own ``--max-body-bytes``."""

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
"""A relayed call's gRPC code as the HTTP status the health envelope counts (others: 500)."""


class GuardedRelay:
    """The sidecar's gRPC server side: guard, then relay to ``upstream`` (``host:port`` on
    loopback or ``unix:/path``). Started and stopped with the sidecar's HTTP server."""

    def __init__(
        self,
        *,
        module: str,
        guard: Guard,
        classifier: Classifier,
        health: Health,
        upstream: str,
        timeout: float,
        max_message_bytes: int,
        audit_allow: bool = True,
    ) -> None:
        self.module = module
        self.guard = guard
        self.classifier = classifier
        self.health = health
        self.upstream = upstream
        self.timeout = timeout
        self.audit_allow = audit_allow
        self._options = message_options(max_message_bytes)
        self._deciding = {name.decode("latin-1") for name in classifier.raw_headers} | {
            headers.TRACEPARENT,
            headers.DEADLINE_MS,
        }
        self._channel: grpc.aio.Channel | None = None
        self._methods: dict[str, Any] = {}

    async def open(self) -> None:
        """Open the channel to the runtime (connections are made on first use)."""
        self._channel = grpc.aio.insecure_channel(self.upstream, options=self._options)

    async def close(self) -> None:
        """Close the channel to the runtime."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def handler(self) -> grpc.GenericRpcHandler:
        """A handler relaying every method of the service (others: ``UNIMPLEMENTED``)."""
        relay = self

        class _Handler(grpc.GenericRpcHandler):  # type: ignore[misc]
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
                method: str = details.method
                if not method.startswith(_PREFIX):
                    return None

                async def call(
                    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
                ) -> bytes:
                    return await relay.call(method, request, context)

                return grpc.unary_unary_rpc_method_handler(call)

        return _Handler()

    def _upstream_method(self, method: str) -> Any:
        stub = self._methods.get(method)
        if stub is None:
            assert self._channel is not None, "relay used before it was opened"
            stub = self._channel.unary_unary(method)
            self._methods[method] = stub
        return stub

    async def call(
        self, method: str, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        """Guard one call, relay it and record it."""
        started = time.perf_counter()
        lines = request_headers(context.invocation_metadata())
        deciding = self._deciding
        fields = headers.fields([(k, v) for k, v in lines if k.decode("latin-1") in deciding])
        try:
            tags = self.classifier.classify(fields) if fields else frozenset()
            deadline = headers.single(headers.DEADLINE_MS, fields.get(headers.DEADLINE_MS))
        except headers.HeaderError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        trace_id = trace_id_from_traceparent(fields.get(headers.TRACEPARENT))
        if tags:
            verdict = self.guard.check(tags)
            denied = verdict.decision is not Decision.ALLOW
            if denied or self.audit_allow:
                if trace_id is None:
                    # No trace context: make one, so the record and the runtime share it.
                    traceparent = new_traceparent()
                    lines = [(k, v) for k, v in lines if k != headers.TRACEPARENT.encode()]
                    lines.append((headers.TRACEPARENT.encode(), traceparent.encode()))
                    trace_id = trace_id_from_traceparent(traceparent)
                self.guard.record(verdict, trace_id)
            self.health.record_decision(verdict.decision.value, denied)
            if not verdict.forwards:
                await abort(context, grpc.StatusCode.PERMISSION_DENIED, verdict.reason)
        timeout = self.timeout
        if deadline is not None:
            with contextlib.suppress(ValueError):
                timeout = min(timeout, max(float(deadline) / 1000.0, 0.001))
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(remaining, 0.001))
        metadata = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in lines)
        health = self.health
        health.in_flight += 1
        status, error = 502, True
        try:
            try:
                answer: bytes = await self._upstream_method(method)(
                    request, metadata=metadata, timeout=timeout
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                status = HTTP_STATUS.get(code, 500)
                error = status >= 500
                details = exc.details() or ""
                if code is grpc.StatusCode.UNAVAILABLE and "connect" in details.lower():
                    # the transport's words, not the runtime's: say whose runtime it was
                    details = f"module '{self.module}': runtime unreachable over gRPC: {details}"
                await abort(context, code, details)
            status, error = 200, False
            return answer
        finally:
            health.in_flight -= 1
            health.record(time.perf_counter() - started, status, error)


class RelayServer:
    """The relay's gRPC server and its channel to the runtime, started and stopped together
    (a companion of the sidecar's HTTP server)."""

    def __init__(self, relay: GuardedRelay, address: str, max_message_bytes: int) -> None:
        self.relay = relay
        self.server = GrpcServer([relay.handler()], address, max_message_bytes=max_message_bytes)

    async def start(self) -> None:
        """Open the channel, then listen."""
        await self.relay.open()
        await self.server.start()

    async def stop(self) -> None:
        """Stop listening (running calls finish), then close the channel."""
        await self.server.stop()
        await self.relay.close()
