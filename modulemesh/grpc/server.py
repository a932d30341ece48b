"""``inference.GRPCInferenceService`` served by an OIP v2 ASGI app (the runtime's, the router's).

Each call is answered by the app the HTTP port serves, called in process with the HTTP request
the call stands for (no socket, no HTTP parsing): ``ModelInfer`` is ``POST .../infer`` with the
codec's binary body, ``ModelMetadata`` is ``GET /v2/models/{name}``, and so on. So gRPC and
REST share one inference path: the same checks, batching, privacy gates, shedding, deadlines
and error messages. gRPC metadata become the request headers (every value of a key a field line
of its own, joined as HTTP's repeated lines are, RFC 9110 §5.3), and a call's gRPC deadline
becomes ``x-modulemesh-deadline-ms`` unless that is sent. HTTP error statuses map to gRPC
codes (:data:`STATUS_CODES`) with the app's message as the details.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NoReturn

import grpc
import orjson

from modulemesh import headers, oip
from modulemesh.grpc import codec
from modulemesh.grpc import inference_pb2 as pb
from modulemesh.httpserver import App, Message

__all__ = [
    "SERVICE",
    "STATUS_CODES",
    "GrpcServer",
    "OipService",
    "code_for",
    "request_headers",
]

SERVICE = "inference.GRPCInferenceService"

STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""HTTP status of the app's answer -> gRPC status code of the call."""

_log = logging.getLogger("modulemesh.grpc")
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_CONTENT_TYPE = (b"content-type", oip.BINARY_CONTENT_TYPE.encode())
_HEADER_LENGTH = oip.HEADER_LENGTH.encode()
_DEADLINE = headers.DEADLINE_MS.encode()
_EMPTY_BODY: Message = {"type": "http.request", "body": b"", "more_body": False}


def code_for(status: int) -> grpc.StatusCode:
    """The gRPC code for an HTTP status (UNKNOWN for one without a match)."""
    return STATUS_CODES.get(status, grpc.StatusCode.UNKNOWN)


def request_headers(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> list[tuple[bytes, bytes]]:
    """gRPC metadata as ASGI request headers: text keys only (``-bin`` values are binary, and
    ``grpc-*`` and pseudo-headers are the transport's), one header line per value."""
    out: list[tuple[bytes, bytes]] = []
    for key, value in metadata or ():
        if key.startswith((":", "grpc-")) or key.endswith("-bin") or isinstance(value, bytes):
            continue
        out.append((key.encode("latin-1"), value.encode("latin-1")))
    return out


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, details: str
) -> NoReturn:
    """End the call with ``code`` and ``details`` (``context.abort`` raises to do so)."""
    await context.abort(code, details)
    raise AssertionError("grpc.aio.ServicerContext.abort returned")


class _Answer:
    """What the app sent back for one call."""

    __slots__ = ("body", "headers", "status")

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    def error(self) -> str:
        """The app's error message (``{"error": ...}``), else the body as text."""
        try:
            loaded = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return self.body.decode("utf-8", "replace") or f"HTTP status {self.status}"
        if isinstance(loaded, dict) and isinstance(message := loaded.get("error"), str):
            return message
        return self.body.decode("utf-8", "replace")


class OipService:
    """The six calls of the service, each answered by ``app``."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def _call(
        self,
        method: str,
        path: str,
        context: grpc.aio.ServicerContext[Any, Any],
        body: bytes = b"",
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> _Answer:
        """One HTTP exchange with the app, in process."""
        request_lines = request_headers(context.invocation_metadata())
        if extra:
            request_lines.extend(extra)
        remaining = context.time_remaining()
        if remaining is not None and all(key != _DEADLINE for key, _ in request_lines):
            request_lines.append((_DEADLINE, b"%d" % max(1, int(remaining * 1000))))
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": "2",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": request_lines,
            "client": None,
            "server": None,
        }
        first: Message = (
            {"type": "http.request", "body": body, "more_body": False} if body else _EMPTY_BODY
        )
        received = False
        answer = _Answer()
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal received
            if not received:
                received = True
                return first
            await asyncio.Event().wait()  # nothing more comes; the call's cancel ends it
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
                answer.headers = message.get("headers", [])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        answer.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return answer

    async def _json(self, path: str, context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, Any]:
        """``GET path``'s JSON document; a status other than 200 ends the call with its code."""
        answer = await self._call("GET", path, context)
        if answer.status != 200:
            await abort(context, code_for(answer.status), answer.error())
        document: dict[str, Any] = orjson.loads(answer.body)
        return document

    @staticmethod
    def _model_path(name: str, version: str) -> str:
        path = f"/v2/models/{name}"
        return f"{path}/versions/{version}" if version else path

    async def _named(self, name: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if not name or "/" in name:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"model name {name!r} is not a name" if name else "the request names no model",
            )

    async def server_live(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerLiveResponse:
        answer = await self._call("GET", "/v2/health/live", context)
        return pb.ServerLiveResponse(live=answer.status == 200)

    async def server_ready(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerReadyResponse:
        answer = await self._call("GET", "/v2/health/ready", context)
        return pb.ServerReadyResponse(ready=answer.status == 200)

    async def model_ready(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        await self._named(request.name, context)
        path = self._model_path(request.name, request.version) + "/ready"
        answer = await self._call("GET", path, context)
        # Not ready, and no such model, are both "false" (as the HTTP ready route's clients
        # read a 404); a model that cannot be asked about ends the call with its code.
        if answer.status not in (200, 404, 503):
            await abort(context, code_for(answer.status), answer.error())
        return pb.ModelReadyResponse(ready=answer.status == 200)

    async def server_metadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerMetadataResponse:
        meta = await self._json("/v2", context)
        return pb.ServerMetadataResponse(
            name=str(meta.get("name", "")),
            version=str(meta.get("version", "")),
            extensions=[str(e) for e in meta.get("extensions", [])],
        )

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelMetadataResponse:
        await self._named(request.name, context)
        meta = await self._json(self._model_path(request.name, request.version), context)
        response = pb.ModelMetadataResponse(
            name=str(meta.get("name", request.name)),
            versions=[str(v) for v in meta.get("versions", [])],
            platform=str(meta.get("platform", "")),
        )
        for kind, target in (("inputs", response.inputs), ("outputs", response.outputs)):
            for tensor in meta.get(kind, []):
                target.add(
                    name=str(tensor.get("name", "")),
                    datatype=str(tensor.get("datatype", "")),
                    shape=[int(d) for d in tensor.get("shape", [])],
                )
        return response

    async def model_infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        await self._named(request.model_name, context)
        try:
            body, length = codec.request_body(request)
        except codec.CodecError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        path = self._model_path(request.model_name, request.model_version) + "/infer"
        answer = await self._call(
            "POST", path, context, body, [_CONTENT_TYPE, (_HEADER_LENGTH, b"%d" % length)]
        )
        if answer.status != 200:
            await abort(context, code_for(answer.status), answer.error())
        try:
            return codec.response_message(answer.body, answer.header(_HEADER_LENGTH))
        except oip.ProtocolError as exc:
            await abort(context, grpc.StatusCode.INTERNAL, exc.message)

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's method handlers, for ``grpc.aio.Server.add_generic_rpc_handlers``."""

        def unary(
            fn: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]],
            request_type: Any,
        ) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=request_type.FromString,
                response_serializer=lambda message: message.SerializeToString(),
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerLive": unary(self.server_live, pb.ServerLiveRequest),
                "ServerReady": unary(self.server_ready, pb.ServerReadyRequest),
                "ModelReady": unary(self.model_ready, pb.ModelReadyRequest),
                "ServerMetadata": unary(self.server_metadata, pb.ServerMetadataRequest),
                "ModelMetadata": unary(self.model_metadata, pb.ModelMetadataRequest),
                "ModelInfer": unary(self.model_infer, pb.ModelInferRequest),
            },
        )


def message_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel/server options bounding a message both ways (gRPC's own default is 4 MiB in)."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


class GrpcServer:
    """A ``grpc.aio`` server on one address with the given handlers; started and stopped
    alongside the HTTP server (:func:`modulemesh.httpserver.serve`'s ``companions``)."""

    def __init__(
        self,
        handlers: list[grpc.GenericRpcHandler],
        address: str,
        *,
        max_message_bytes: int,
        grace: float = 5.0,
    ) -> None:
        self.address = address
        """``host:port`` (port 0: a free one, set once started) or ``unix:/path``."""
        self._handlers = handlers
        self._options = message_options(max_message_bytes)
        self._grace = grace
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        """Listen; raises ``OSError`` naming the address when it cannot be bound."""
        # No SO_REUSEPORT (grpcio's default): a second server on a taken port must fail, as
        # the HTTP port does, instead of silently sharing it with the first.
        server = grpc.aio.server(options=[*self._options, ("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers(tuple(self._handlers))
        try:
            port = server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise OSError(f"gRPC cannot listen on {self.address}: {exc}") from None
        if not self.address.startswith("unix:") and self.address.endswith(":0"):
            self.address = f"{self.address.rsplit(':', 1)[0]}:{port}"
        await server.start()
        self._server = server
        if self.address.startswith("unix:"):
            # owner-only, as the HTTP socket (httpserver.bind_unix); its directory is too
            os.chmod(self.address.removeprefix("unix:"), 0o600)
        _log.info("gRPC (%s) listening on %s", SERVICE, self.address)

    async def stop(self) -> None:
        """Refuse new calls and let running ones finish, up to the grace period."""
        if self._server is not None:
            await self._server.stop(self._grace)
            self._server = None


def listen_address(host: str, port: int) -> str:
    """``host:port`` as gRPC writes it (IPv6 hosts bracketed)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
