"""The runtime's HTTP surface: a raw ASGI app for the Open Inference Protocol v2 endpoints.

Raw ASGI rather than a framework because the ``infer`` path is the hot path of every module
and the sidecar/router budgets depend on it: a handful of fixed routes needs no router, and
skipping request/response objects saves tens of microseconds per call. Served by
:mod:`modulemesh.httpserver` (httptools + uvloop), like the sidecar and the router.

Routes: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2``, ``/v2/models/{m}[/versions/{v}]``,
``.../ready``, ``POST .../infer`` and ``GET /stats``. Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson

from modulemesh import __version__, headers, oip
from modulemesh.httpserver import (
    BodyTooLarge,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    read_body,
    run_lifespan,
)
from modulemesh.runtime.batching import Batcher, BatchError, QueueFull
from modulemesh.runtime.config import RuntimeConfig
from modulemesh.runtime.model import Model

log = logging.getLogger("modulemesh.runtime")


_JSON = b"application/json"


def default_name(source: str) -> str:
    """Model name when ``--name`` is absent: the file stem, or the directory for mounts."""
    path = Path(urlparse(source).path if "://" in source else source)
    if path.suffix != ".onnx" or path.stem == "model":
        parent = path if path.suffix != ".onnx" else path.parent
        return parent.name or "model"
    return path.stem


@dataclass
class RuntimeState:
    """What the endpoints report: the model once loaded, else why not; drain status."""

    name: str
    model: Model | None = None
    batcher: Batcher | None = None
    reason: str = "model is loading"
    draining: bool = False
    active: int = 0
    extra_parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.model is not None and self.batcher is not None and not self.draining


def _json(status: int, payload: Any) -> tuple[int, bytes]:
    return status, orjson.dumps(payload)


class RuntimeApp:
    """ASGI callable serving one model from ``state`` under ``config``'s limits."""

    def __init__(self, config: RuntimeConfig, state: RuntimeState) -> None:
        self.config = config
        self.state = state
        self._retry_after = str(config.retry_after).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await run_lifespan(receive, send)
            return
        if kind != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path.startswith("/v2/models/"):
                await self._model_route(path[len("/v2/models/") :], method, scope, receive, send)
                return
            if method not in ("GET", "HEAD"):
                status, body = _json(405, {"error": f"method {method} not allowed on {path}"})
            elif path == "/v2/health/live":
                status, body = _json(200, {"live": True})
            elif path == "/v2/health/ready":
                status, body = self._ready_body()
            elif path in ("/v2", "/v2/"):
                status, body = _json(
                    200,
                    {
                        "name": "modulemesh",
                        "version": __version__,
                        "extensions": ["binary_tensor_data", "model_repository_metadata"],
                    },
                )
            elif path == "/stats":
                status, body = _json(200, self.stats())
            else:
                status, body = _json(404, {"error": f"no route {path}"})
            await self._send(send, status, body)
        except ClientDisconnected:
            return

    # ------------------------------------------------------------------ helpers

    async def _send(
        self,
        send: Send,
        status: int,
        body: bytes,
        extra: list[tuple[bytes, bytes]] | None = None,
        content_type: bytes = _JSON,
    ) -> None:
        response_headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
        ]
        if extra:
            response_headers.extend(extra)
        if self.state.draining:
            response_headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

    def _model_headers(self) -> list[tuple[bytes, bytes]]:
        model = self.state.model
        if model is None:
            return []
        return [
            (headers.PROVIDER.encode(), model.provider.encode()),
            (headers.MODEL_VERSION.encode(), model.version.encode()),
        ]

    def _ready_body(self) -> tuple[int, bytes]:
        if self.state.ready:
            return _json(200, {"ready": True})
        reason = "runtime is draining" if self.state.draining else self.state.reason
        return _json(
            503,
            {"ready": False, "error": f"model {self.state.name!r} is not ready: {reason}"},
        )

    def stats(self) -> dict[str, Any]:
        """The ``GET /stats`` document (docs/architecture.md) the sidecar polls."""
        state, model, batcher = self.state, self.state.model, self.state.batcher
        return {
            "model": state.name,
            "modelVersion": model.version if model else None,
            "provider": model.provider if model else None,
            "ready": state.ready,
            "reason": "" if state.ready else ("draining" if state.draining else state.reason),
            "queueDepth": batcher.queue_depth if batcher else 0,
            "inFlight": state.active,
            "maxBatchSize": batcher.max_batch_size if batcher else self.config.max_batch_size,
            "batches": batcher.batches if batcher else 0,
            "rows": batcher.rows if batcher else 0,
            "batchFill": round(batcher.batch_fill, 4) if batcher else 0.0,
            "meanBatchSize": round(batcher.mean_batch_size, 3) if batcher else 0.0,
            "maxDelayMs": self.config.max_delay_ms,
            "adaptiveDelay": self.config.adaptive_delay,
            "companyRate": round(batcher.policy.company_rate(), 1) if batcher else 0.0,
        }

    async def _model_route(
        self, rest: str, method: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        parts = rest.split("/")
        name, tail = parts[0], parts[1:]
        version: str | None = None
        if len(tail) >= 2 and tail[0] == "versions":
            version, tail = tail[1], tail[2:]
        action = tail[0] if tail else ""
        if len(tail) > 1 or action not in ("", "ready", "infer"):
            await self._send(send, *_json(404, {"error": f"no route {scope['path']}"}))
            return
        if name != self.state.name:
            await self._send(
                send,
                *_json(
                    404,
                    {"error": f"unknown model {name!r}; this runtime serves {self.state.name!r}"},
                ),
            )
            return
        model = self.state.model
        if version is not None and model is not None and version != model.version:
            await self._send(
                send,
                *_json(
                    404,
                    {
                        "error": f"unknown version {version!r} of model {name!r}; "
                        f"serving version {model.version!r}"
                    },
                ),
            )
            return
        wanted = "POST" if action == "infer" else "GET"
        if method != wanted and not (wanted == "GET" and method == "HEAD"):
            await self._send(
                send, *_json(405, {"error": f"method {method} not allowed on {scope['path']}"})
            )
            return
        if action == "infer":
            await self._infer(scope, receive, send)
        elif action == "ready":
            await self._send(send, *self._ready_body(), self._model_headers())
        elif model is None:
            await self._send(send, *self._ready_body())
        else:
            meta = model.metadata(self.state.extra_parameters)
            await self._send(send, *_json(200, meta), self._model_headers())

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.config.max_body_bytes
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                raise BodyTooLarge  # refused before reading a byte of it
        return await read_body(receive, limit)

    def _error(self, status: int, message: str) -> tuple[int, bytes]:
        return status, oip.error_body(message)

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        if state.draining:
            await self._send(
                send,
                *self._error(503, "runtime is draining; retry on another replica"),
                [(b"retry-after", self._retry_after)],
            )
            return
        model, batcher = state.model, state.batcher
        if model is None or batcher is None:
            await self._send(
                send,
                *self._error(503, f"model {state.name!r} is not ready: {state.reason}"),
                [(b"retry-after", self._retry_after)],
            )
            return
        state.active += 1
        try:
            try:
                body = await self._read_body(scope, receive)
            except BodyTooLarge:
                await self._send(
                    send,
                    *self._error(
                        413, f"request body exceeds the {self.config.max_body_bytes}-byte limit"
                    ),
                )
                return
            header_length = None
            for key, value in scope["headers"]:
                if key == b"inference-header-content-length":
                    header_length = value.decode("latin-1")
                    break
            try:
                request = oip.decode_request(body, header_length)
                rows = model.check(request.inputs)
                names = request.output_names(model.output_names)
            except oip.ProtocolError as exc:
                await self._send(send, *self._error(exc.status, exc.message))
                return
            try:
                result, batch_size = await batcher.submit(request.inputs, rows)
            except QueueFull as exc:
                await self._send(
                    send,
                    *self._error(503, str(exc)),
                    [
                        (b"retry-after", self._retry_after),
                        (headers.QUEUE_DEPTH.encode(), str(batcher.queue_depth).encode()),
                    ],
                )
                return
            except BatchError as exc:
                await self._send(send, *self._error(500, str(exc)))
                return
            response = oip.InferResponse(
                model_name=model.name,
                model_version=model.version,
                id=request.id,
                outputs={n: result[n] for n in names},
            )
            payload, length = oip.encode_response(response, request.binary_outputs())
            extra = [
                (headers.QUEUE_DEPTH.encode(), str(batcher.queue_depth).encode()),
                (headers.BATCH_SIZE.encode(), str(batch_size).encode()),
                *self._model_headers(),
            ]
            content_type = _JSON
            if length is not None:
                extra.append((b"inference-header-content-length", str(length).encode()))
                content_type = oip.BINARY_CONTENT_TYPE.encode()
            await self._send(send, 200, payload, extra, content_type)
        except asyncio.CancelledError:
            raise
        finally:
            state.active -= 1
