"""Calls to one module's sidecar: OIP v2 over a pooled keep-alive HTTP/1.1 connection.

Requests and responses use the binary tensor extension (no JSON number formatting on either
side). When the inputs are the client's own (:class:`~modulemesh.router.payload.ClientInputs`)
their bytes are forwarded instead of re-encoded; when the answer is the graph's answer
(``final``), the module is asked for the client's outputs in the client's format and its body
is kept undecoded (:class:`~modulemesh.router.context.RawAnswer`). Every call carries the
request's tags, the remaining deadline, the trace context and the headers the graph
propagates; every response's envelope header is handed to the envelope store. Failures come
back as :class:`~modulemesh.router.errors.RouteError` classified for retry, fallback and the
breaker.
The connection pool is the sidecar's lean httptools client (one implementation to tune).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import orjson

from modulemesh import headers, oip
from modulemesh.router.context import RawAnswer, Tensors
from modulemesh.router.envelopes import ModuleEnvelope
from modulemesh.router.errors import RouteError
from modulemesh.router.payload import ClientInputs, rename_model
from modulemesh.sidecar.config import Upstream
from modulemesh.sidecar.upstream import Pool, UpstreamError, UpstreamTimeout

__all__ = ["ModuleClient", "decode_answer", "parse_endpoint", "rename_answer"]

_ENVELOPE = headers.ENVELOPE.encode()
_HEADER_LENGTH = oip.HEADER_LENGTH.encode()
_RETRY_AFTER = b"retry-after"


def parse_endpoint(url: str) -> Upstream:
    """``http://host:port`` -> host and port; anything else is a clear error."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"module endpoint must be an http:// URL, got {url!r}")
    return Upstream(host=parts.hostname, port=parts.port or 80)


class ModuleClient:
    """Calls one module (through its sidecar)."""

    def __init__(self, module: str, endpoint: str, envelope: ModuleEnvelope) -> None:
        self.module = module
        self.endpoint = endpoint
        self.upstream = parse_endpoint(endpoint)
        self.envelope = envelope
        self._pool: Pool | None = None
        host = f"{self.upstream.host}:{self.upstream.port}"
        line = f"POST /v2/models/{module}/infer HTTP/1.1\r\nhost: {host}\r\n"
        self._binary_head = (line + "content-type: application/octet-stream\r\n").encode()
        self._json_head = (line + "content-type: application/json\r\n").encode()

    def start(self) -> None:
        """Create the connection pool (needs the running loop)."""
        self._pool = Pool(self.upstream, connect_timeout=1.0)

    def close(self) -> None:
        """Close idle connections."""
        if self._pool is not None:
            self._pool.close()

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise RuntimeError("ModuleClient.start() was not called")
        return self._pool

    async def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        """A small GET (metadata, envelope)."""
        try:
            return await self.pool.get(path, timeout=timeout)
        except UpstreamError as exc:
            raise RouteError(502, f"module {self.module!r}: {exc}", module=self.module) from None

    async def infer(
        self,
        inputs: Tensors,
        *,
        timeout: float,
        tags: str | None,
        hop_headers: list[tuple[bytes, bytes]],
        where: str,
        final: oip.RequestHead | None = None,
    ) -> tuple[Tensors | RawAnswer, str | None]:
        """Run the module on ``inputs``; returns its outputs and model version.

        ``timeout`` (seconds) bounds the whole exchange and is sent downstream as the
        deadline; ``where`` prefixes every error message (node and step). With ``final`` (the
        client's request head) the module answers with the client's outputs in the client's
        format and the body comes back undecoded, with no version (only explain reports it,
        and explain never asks for a raw answer).
        """
        body, header_length = _request_body(inputs, final)
        head = self._json_head if header_length is None else self._binary_head
        parts = [head, b"content-length: %d\r\n" % len(body)]
        if header_length is not None:
            parts.append(b"inference-header-content-length: %d\r\n" % header_length)
        parts.append(b"x-modulemesh-deadline-ms: %d\r\n" % max(1, int(timeout * 1000)))
        if tags:
            parts.append(b"x-modulemesh-tags: " + tags.encode() + b"\r\n")
        for name, value in hop_headers:
            parts.append(name + b": " + value + b"\r\n")
        parts.append(b"\r\n")
        head = b"".join(parts)
        module = self.module
        try:
            conn = await self.pool.request(head, body, timeout=timeout)
            try:
                chunks = []
                while chunk := await conn.read():
                    chunks.append(chunk)
                status, response_headers = conn.status, conn.headers
            finally:
                conn.release()
        except UpstreamTimeout:
            raise _timeout(where, module, timeout) from None
        except UpstreamError as exc:
            raise RouteError(
                502, f"{where}: module {module!r} unreachable: {exc}", module=module,
                retryable=True, breaker=True,
            ) from None  # fmt: skip
        except asyncio.CancelledError:
            raise
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        length: bytes | None = None
        retry_after: bytes | None = None
        for name, value in response_headers:
            if name == _ENVELOPE:
                self.envelope.set_header(value)
            elif name == _HEADER_LENGTH:
                length = value
            elif name == _RETRY_AFTER:
                retry_after = value
        if status == 504:
            # The sidecar holds the same deadline (sent as x-modulemesh-deadline-ms) and may
            # notice it first: that is this call timing out, reported as such.
            raise _timeout(where, module, timeout)
        if status != 200:
            raise _status_error(status, data, module, where, retry_after)
        try:
            header_length = None if length is None else int(length)
            if final is not None:
                return RawAnswer(data, header_length), None
            response = oip.decode_response(data, header_length)
        except (oip.ProtocolError, ValueError) as exc:
            raise _bad_response(where, module, exc) from None
        return response.outputs, response.model_version


def _request_body(inputs: Tensors, final: oip.RequestHead | None) -> tuple[bytes, int | None]:
    """The module's request body: the client's bytes when the inputs are the client's."""
    if isinstance(inputs, ClientInputs):
        if final is not None:
            return inputs.body, inputs.header_length
        return inputs.for_module()
    if final is not None:
        return oip.encode_request(
            inputs, outputs=final.outputs, binary=True,
            binary_data_output=final.binary_data_output, id=final.id,
        )  # fmt: skip
    return oip.encode_request(inputs, binary=True, binary_data_output=True)


def decode_answer(raw: RawAnswer, module: str) -> Tensors:
    """The tensors of a raw module answer (502 naming the module if they do not decode)."""
    try:
        return oip.decode_response(raw.body, raw.header_length).outputs
    except oip.ProtocolError as exc:
        raise _bad_response("graph answer", module, exc) from None


def rename_answer(raw: RawAnswer, module: str, graph: str) -> tuple[bytes, int | None]:
    """A raw module answer as the graph's own (only ``model_name`` changes); 502 naming the
    module if it cannot be read."""
    try:
        return rename_model(raw.body, raw.header_length, graph)
    except oip.ProtocolError as exc:
        raise _bad_response("graph answer", module, exc) from None


def _bad_response(where: str, module: str, exc: Exception) -> RouteError:
    return RouteError(
        502, f"{where}: module {module!r} sent a bad response: {exc}", module=module,
        retryable=False, breaker=True, fallback=True,
    )  # fmt: skip


def _timeout(where: str, module: str, timeout: float) -> RouteError:
    return RouteError(
        504,
        f"{where}: module {module!r} did not answer within {timeout * 1000:.0f} ms",
        module=module,
        retryable=True,
        breaker=True,
    )


def _status_error(
    status: int, body: bytes, module: str, where: str, retry_after: bytes | None
) -> RouteError:
    detail = ""
    try:
        parsed = orjson.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            detail = parsed["error"]
    except orjson.JSONDecodeError:
        pass
    if not detail:
        detail = body[:300].decode("utf-8", "replace").strip() or f"HTTP {status}"
    message = f"{where}: module {module!r} answered {status}: {detail}"
    if status == 429:
        seconds = int(retry_after) if retry_after and retry_after.isdigit() else 1
        return RouteError(429, message, module=module, retryable=True, retry_after=seconds)
    if status == 403:
        return RouteError(403, message, module=module, fallback=True)
    if status >= 500:
        return RouteError(502 if status != 504 else 504, message, module=module,
                          retryable=True, breaker=True)  # fmt: skip
    return RouteError(status, message, module=module)
