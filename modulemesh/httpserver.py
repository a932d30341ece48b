"""A lean HTTP/1.1 server for ASGI apps: the sidecar's and the router's data path.

Why not uvicorn: on a two-core pod every microsecond a proxy spends is taken from the model,
and uvicorn's general-purpose HTTP handling (header validation, per-request cycle objects,
two socket writes per response) cost as much CPU per request as the proxying itself. This
server does only what the data path needs, as one asyncio Protocol on ``httptools``:

* HTTP/1.1 keep-alive and pipelining (requests on one connection are answered in order);
* request bodies handed to the app as they arrive, with reading paused while the app falls
  behind, and a size limit (``413``); malformed requests get ``400``, slow request heads
  and bodies ``408`` (a client that sends a head and then trickles or withholds its body
  holds its connection ``body_timeout`` at most); idle keep-alive connections close after
  ``keep_alive_timeout``;
* responses written with one socket write when the app sends head and body together;
  ``content-length`` added when the app sends the whole body at once, chunked framing when it
  streams without one;
* ASGI 3 ``http`` and ``lifespan`` scopes, so apps stay plain ASGI callables (and testable
  under any ASGI server);
* SIGTERM/SIGINT: stop accepting, close idle connections, let in-flight requests finish
  (bounded by ``drain_timeout``), run the lifespan shutdown, exit 0;
* TCP on ``host:port``, or a Unix domain socket (``uds``) that only its owner can connect to,
  so a runtime behind a sidecar has no port any other local process could call.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import stat
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import unquote

import httptools

__all__ = [
    "App",
    "BodyTooLarge",
    "ClientDisconnected",
    "HttpProtocol",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "Server",
    "ServerConfig",
    "bind_unix",
    "read_body",
    "run_lifespan",
    "serve",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger("modulemesh.httpserver")

Hook = Callable[[], Awaitable[None]]


class ClientDisconnected(Exception):
    """The client went away before its request was read (``http.disconnect``)."""


class BodyTooLarge(Exception):
    """The request body is over the app's limit."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, for apps that need it at once (the server streams it in).

    Raises :class:`BodyTooLarge` past ``limit`` bytes (the server's own ``max_body`` refuses
    sooner; this guards the app under any ASGI server) and :class:`ClientDisconnected`.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def run_lifespan(
    receive: Receive, send: Send, startup: Hook | None = None, shutdown: Hook | None = None
) -> None:
    """The app's side of an ASGI ``lifespan`` scope, so each app supplies only its two hooks.

    ``startup`` runs before the server listens; if it raises, the server is told
    ``lifespan.startup.failed`` with the error and refuses to start. ``shutdown`` runs after
    the server has drained its connections.
    """
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if startup is not None:
                try:
                    await startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if shutdown is not None:
                await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


_HIGH_WATER = 256 * 1024
"""Buffered request body bytes at which reading from the client pauses."""
BODY_GRACE_RATE = 64 * 1024
"""Default of :attr:`ServerConfig.body_grace_rate`."""
_MAX_PIPELINED = 16
"""Requests parsed ahead of the one being answered before reading pauses."""
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    301: "Moved Permanently", 302: "Found", 304: "Not Modified", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 429: "Too Many Requests", 499: "Client Closed Request",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}  # fmt: skip
_STATUS_LINES: dict[int, bytes] = {}
_CLOSE = b"connection: close\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUS = frozenset({204, 304})


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        reason = _REASONS.get(status, "")
        line = f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
        _STATUS_LINES[status] = line
    return line


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Listening address and the limits the server enforces."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body: int | None = 64 * 1024 * 1024
    """Largest request body accepted (bytes); larger ones get ``413`` and the connection
    closes. ``None``: no limit (a proxy that streams bodies leaves limits to its upstream)."""
    max_head: int = 64 * 1024
    """Largest request head (request line and headers, bytes); larger is a ``400``."""
    keep_alive_timeout: float = 75.0
    """Seconds an idle keep-alive connection stays open."""
    head_timeout: float = 30.0
    """Seconds a client has to send a complete request head once it started one (``408``)."""
    body_timeout: float = 30.0
    """Seconds a client has to send the whole request body once its head is in, plus one
    second per ``body_grace_rate`` bytes received (a large body at a fair rate is not cut);
    then ``408`` and the connection closes. Time the server itself stops reading (the app
    falling behind) does not count against the client."""
    body_grace_rate: int = BODY_GRACE_RATE
    """Bytes of request body that earn the client one more second of ``body_timeout``."""
    drain_timeout: float = 30.0
    """Seconds in-flight requests get to finish after SIGTERM."""
    backlog: int = 2048
    uds: str | None = None
    """Listen on this Unix domain socket path instead of ``host:port`` (see :func:`bind_unix`)."""


def bind_unix(path: str, backlog: int = 2048) -> socket.socket:
    """A listening Unix socket at ``path`` that only this user (and root) can connect to.

    The socket file is created mode 0600 (under a umask, so it is never briefly wider) and a
    missing directory 0700. A socket file left by a killed server (nothing accepts on it) is
    replaced; a live one is refused, as a taken TCP port would be, and so is any other file.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # stale: its server is gone
            else:
                raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _identity(path: str) -> tuple[int, int, int]:
    """Device, inode and change time of ``path``: the inode alone is reused at once for a new
    file at the same path."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_ctime_ns


def _simple_response(status: int, message: str, *, close: bool = True) -> bytes:
    body = b'{"error":"' + message.replace('"', "'").encode("latin-1", "replace") + b'"}'
    return b"".join(
        (
            _status_line(status),
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
            _CLOSE if close else b"",
            b"\r\n",
            body,
        )
    )


class _Request:
    """One parsed request: its scope, body chunks as they arrive, and its response state."""

    __slots__ = (
        "body",
        "body_pending",
        "body_size",
        "complete",
        "expect_continue",
        "keep_alive",
        "scope",
        "waiter",
    )

    def __init__(self, scope: Scope, keep_alive: bool, expect_continue: bool) -> None:
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.body: deque[bytes] = deque()
        self.body_size = 0
        self.body_pending = 0
        self.complete = False
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class HttpProtocol(asyncio.Protocol):
    """One client connection: parses requests, runs the app on each in turn, writes answers."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._app = server.app
        self._config = server.config
        self._loop = server.loop
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._client: tuple[str, int] | None = None
        self._local: tuple[str, int] | None = None
        self._queue: deque[_Request] = deque()
        """Parsed requests not yet answered; the first is the one the app is handling."""
        self._parsing: _Request | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._reading_paused = False
        self._writing_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = False
        self._cycle: _Cycle | None = None
        self._disconnected: asyncio.Future[None] | None = None
        self._linger_budget: int | None = None
        """Bytes still discarded after a lingering close (None: not lingering)."""
        self._unread = False
        """A refused request's remaining bytes were left unread: close by lingering."""
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_since = 0.0
        """Loop time the body clock of the request being parsed started (or restarted)."""

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self._client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self._local = (str(sock[0]), int(sock[1])) if isinstance(sock, tuple) else None
        self._server.connections.add(self)
        self._arm(self._config.keep_alive_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.connections.discard(self)
        self._disarm()
        self._disarm_body()
        for request in self._queue:
            request.wake()
        disconnected = self._disconnected
        if disconnected is not None and not disconnected.done():
            disconnected.set_result(None)
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)
        if self._server.draining:
            self._server.check_drained()

    def data_received(self, data: bytes) -> None:
        if self._linger_budget is not None:
            self._linger_budget -= len(data)
            if self._linger_budget < 0 and self.transport is not None:
                self.transport.close()
            return
        try:
            self._parser.feed_data(data)
            if self._parsing is not None and self._body_timer is None and not self._closed:
                # a head is in but its body is not: start the body clock (armed here rather
                # than per request, so requests that arrive whole cost no timer)
                self._body_since = self._loop.time()
                self._body_timer = self._loop.call_later(
                    self._config.body_timeout, self._on_body_timer
                )
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raises; a refusal of ours keeps its own status.
            cause = exc.__context__ if isinstance(exc.__context__, _Refused) else None
            if cause is not None:
                self._fail(cause.status, cause.message)
            else:
                self._fail(400, f"malformed HTTP request: {exc}")
        except _Refused as exc:
            self._fail(exc.status, exc.message)

    def eof_received(self) -> bool | None:
        # Half-close: answer what was asked, then close (returning None closes after write).
        return None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._in_head = True
        if not self._queue:
            self._arm(self._config.head_timeout)  # bound the time a client takes to send a head

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self._config.max_head:
            raise _Refused(400, "request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._config.max_head:
            raise _Refused(400, "request head too large")
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        expect_continue = False
        for name, value in self._headers:
            if name == b"content-length":
                if not value.isdigit():
                    raise _Refused(400, "invalid content-length")
                limit = self._config.max_body
                if limit is not None and int(value) > limit:
                    raise _Refused(413, f"request body larger than {limit} bytes")
            elif name == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        url = httptools.parse_url(self._url)
        raw_path = url.path
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        scope: Scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": parser.get_http_version(),
            "method": parser.get_method().decode("ascii"),
            "scheme": "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": url.query or b"",
            "root_path": "",
            "headers": self._headers,
            "client": self._client,
            "server": self._local,
        }
        request = _Request(scope, parser.should_keep_alive(), expect_continue)
        self._parsing = request
        self._in_head = False
        self._queue.append(request)
        self._disarm()
        if len(self._queue) == 1:
            self._start(request)
        elif len(self._queue) > _MAX_PIPELINED:
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        if request is None:
            return
        request.body_size += len(body)
        limit = self._config.max_body
        if limit is not None and request.body_size > limit:
            raise _Refused(413, f"request body larger than {limit} bytes")
        request.body.append(body)
        request.body_pending += len(body)
        if request is self._queue[0]:
            request.wake()
        if request.body_pending > _HIGH_WATER:
            self._pause_reading()

    def on_message_complete(self) -> None:
        request = self._parsing
        if request is None:
            return
        request.complete = True
        self._parsing = None
        self._disarm_body()
        request.wake()

    # -- running the app ----------------------------------------------------------------------

    def _start(self, request: _Request) -> None:
        self._cycle = _Cycle(self, request)
        self._task = self._loop.create_task(self._run(request, self._cycle))

    async def _run(self, request: _Request, cycle: _Cycle) -> None:
        try:
            await self._app(request.scope, cycle.receive, cycle.send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and self._closed:
                pass  # client went away while the app waited
            elif not cycle.started and not self._closed:
                _log.exception("error in ASGI app for %s", request.scope["path"])
                self._write(_simple_response(500, "internal server error"))
            else:
                _log.exception("error in ASGI app after the response started")
            cycle.failed = True
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        if not cycle.finished and not cycle.failed and not self._closed:
            if not cycle.started:
                _log.error("ASGI app returned without a response for %s", request.scope["path"])
                self._write(_simple_response(500, "no response"))
            cycle.failed = True
        self._finish(request, cycle)

    def _finish(self, request: _Request, cycle: _Cycle) -> None:
        self._task = None
        self._cycle = None
        if self._closed:
            return
        reusable = (
            not cycle.failed
            and request.keep_alive
            and not cycle.close
            and not self._server.draining
            and (request.complete or request is not self._parsing)
        )
        if not reusable:
            # Answered before the whole request arrived (e.g. 413): the client may still be
            # sending, so linger instead of resetting the answer away.
            self._close(linger=self._unread or (request is self._parsing and not request.complete))
            return
        self._queue.popleft()
        if self._reading_paused and len(self._queue) <= _MAX_PIPELINED:
            self._resume_reading()
        if self._queue:
            self._start(self._queue[0])
        elif self._in_head:
            self._arm(self._config.head_timeout)
        else:
            self._arm(self._config.keep_alive_timeout)
        if self._server.draining:
            self._server.check_drained()

    # -- helpers ------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """No request being answered or parsed (a lingering close has answered already)."""
        if self._linger_budget is not None and self._task is None:
            return True
        return not self._queue and self._parsing is None

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    async def _drain_writes(self) -> None:
        if self._writing_paused and not self._closed:
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def _fail(self, status: int, message: str) -> None:
        """A request the server itself must refuse: answer (if nothing is underway) and close."""
        if self._closed:
            return
        cycle = self._cycle
        if cycle is None or (cycle.request is self._parsing and not cycle.started):
            # Nothing underway, or the app is reading this very request: refuse it here (the
            # app's receive() then reports a disconnect).
            self._write(_simple_response(status, message))
            self._close(linger=True)
            return
        # The app is answering (this or an earlier request): stop reading, close after its
        # answer, lingering since the client may still be sending.
        self._pause_reading()
        self._unread = True
        if self._parsing is not None:
            self._parsing.keep_alive = False
            self._parsing.complete = True
            self._parsing.wake()
        for request in self._queue:
            request.keep_alive = False

    def _close(self, *, linger: bool = False) -> None:
        """Close the connection. With ``linger``, half-close and discard what the client is
        still sending for a moment first (nginx's lingering close): closing a socket with
        unread data makes the kernel answer with a reset, which can destroy the response
        before the client reads it."""
        if self._closed:
            if not linger and self._linger_budget is not None and self.transport is not None:
                self.transport.close()  # shutdown ends a lingering close early
            return
        self._closed = True
        self._disarm()
        self._disarm_body()
        transport = self.transport
        if transport is None:
            return
        if not linger or not transport.can_write_eof():
            transport.close()
            return
        self._linger_budget = _LINGER_BYTES
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        transport.write_eof()
        self._timer = self._loop.call_later(_LINGER_SECONDS, transport.close)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self._closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if (
            self._reading_paused
            and self.transport is not None
            and not self._closed
            and len(self._queue) <= _MAX_PIPELINED
        ):
            self._reading_paused = False
            self.transport.resume_reading()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self._loop.call_later(seconds, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        if self._queue:
            return  # a request is underway; timers are re-armed when it finishes
        if self._in_head:
            self._write(_simple_response(408, "request head not received in time"))
        self._close()

    def _disarm_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _on_body_timer(self) -> None:
        """The body clock ran out: 408 for a client that trickles or withholds its body."""
        self._body_timer = None
        request = self._parsing
        if request is None or self._closed:
            return
        now = self._loop.time()
        if self._reading_paused:
            # we stopped reading (the app or the pipeline is behind), not the client
            self._body_since = now
            self._body_timer = self._loop.call_later(self._config.body_timeout, self._on_body_timer)
            return
        allowed = self._config.body_timeout + request.body_size / self._config.body_grace_rate
        left = allowed - (now - self._body_since)
        if left > 0:
            self._body_timer = self._loop.call_later(left, self._on_body_timer)
            return
        cycle = self._cycle
        if cycle is not None and cycle.request is request and not cycle.started:
            # the app is waiting for this body: answer 408 here (its receive() then reports
            # a disconnect) and close
            self._fail(408, "request body not received in time")
        elif cycle is not None and cycle.request is request:
            self._close()  # the app already answers: cut the connection, the body is lost
        else:
            # a pipelined request behind the one being answered: drop it, close after that
            # answer (its 408 cannot overtake it)
            self._queue.remove(request)
            self._parsing = None
            self._pause_reading()
            self._unread = True
            for queued in self._queue:
                queued.keep_alive = False

    def close_if_idle(self) -> None:
        """Close the connection when no request is underway (shutdown)."""
        if self.idle:
            self._close()

    def wait_disconnect(self) -> asyncio.Future[None]:
        """A future done when the client disconnects."""
        if self._disconnected is None:
            self._disconnected = self._loop.create_future()
            if self._closed:
                self._disconnected.set_result(None)
        return self._disconnected


_LINGER_SECONDS = 2.0
_LINGER_BYTES = 4 << 20
"""How long, and how many bytes, a lingering close reads and discards before it closes."""


class _Refused(Exception):
    """Raised from parser callbacks to refuse a request (limits, bad framing)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Cycle:
    """ASGI ``receive``/``send`` for one request on one connection."""

    __slots__ = ("_pending_head", "_status", "chunked", "close", "delivered", "failed",
                 "finished", "head_only", "proto", "request", "started")  # fmt: skip

    def __init__(self, proto: HttpProtocol, request: _Request) -> None:
        self.proto = proto
        self.request = request
        self.started = False
        self.finished = False
        self.failed = False
        self.close = False
        self.chunked: bool | None = False
        """``None`` until the first body message decides (no content-length from the app)."""
        self.delivered = False
        self.head_only = request.scope["method"] == "HEAD"
        self._pending_head: list[bytes] | None = None
        self._status = 0

    async def receive(self) -> Message:
        request = self.request
        proto = self.proto
        if request.expect_continue:
            request.expect_continue = False
            if not self.started:
                proto._write(_CONTINUE)
        while True:
            if proto._closed:
                return {"type": "http.disconnect"}
            if self.delivered:
                await proto.wait_disconnect()
                return {"type": "http.disconnect"}
            body = request.body
            if body:
                data = body.popleft() if len(body) == 1 else b"".join(body)
                body.clear()
                request.body_pending = 0
                proto._resume_reading()
                self.delivered = request.complete
                return {"type": "http.request", "body": data, "more_body": not request.complete}
            if request.complete:
                self.delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            proto._resume_reading()
            request.waiter = proto._loop.create_future()
            try:
                await request.waiter
            finally:
                request.waiter = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        proto = self.proto
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("response already started")
            self.started = True
            status = int(message["status"])
            self._status = status
            lines = [_status_line(status)]
            has_length = False
            for name, value in message.get("headers", ()):
                lname = name.lower()
                if lname == b"content-length":
                    has_length = True
                elif lname == b"connection":
                    if value.lower() == b"close":
                        self.close = True
                    continue
                elif lname == b"transfer-encoding":
                    continue
                lines.append(name + b": " + value + b"\r\n")
            if not self.request.keep_alive or proto._server.draining:
                self.close = True
            if self.close:
                lines.append(_CLOSE)
            self._pending_head = lines
            if not (has_length or self.head_only or status in _NO_BODY_STATUS):
                self.chunked = None  # framing decided with the first body message
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started or self.finished:
            raise RuntimeError("http.response.body outside a started response")
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        head = self._pending_head
        if head is not None:
            self._pending_head = None
            if self.chunked is None:  # no content-length from the app
                if more:
                    self.chunked = True
                    head.append(_CHUNKED)
                else:
                    self.chunked = False
                    head.append(b"content-length: %d\r\n" % len(body))
            head.append(b"\r\n")
            if self.head_only or self._status in _NO_BODY_STATUS:
                proto._write(b"".join(head))
            elif self.chunked:
                if body:
                    head.append(b"%x\r\n" % len(body))
                    head.append(body)
                    head.append(b"\r\n")
                proto._write(b"".join(head))
            else:
                head.append(body)
                proto._write(b"".join(head))
        elif not self.head_only and self._status not in _NO_BODY_STATUS:
            if self.chunked:
                if body:
                    proto._write(b"%x\r\n%s\r\n" % (len(body), body))
            elif body:
                proto._write(body)
        if not more:
            self.finished = True
            if self.chunked and not self.head_only:
                proto._write(b"0\r\n\r\n")
        else:
            await proto._drain_writes()


class Server:
    """Listens, tracks connections, runs the lifespan, and drains on shutdown."""

    def __init__(self, app: App, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.connections: set[HttpProtocol] = set()
        self.draining = False
        self._server: asyncio.AbstractServer | None = None
        self._drained: asyncio.Future[None] | None = None
        self._lifespan: _Lifespan | None = None
        self._uds_inode: tuple[int, int, int] | None = None
        self.port = config.port

    @property
    def address(self) -> str:
        """Where the server listens, for log lines: ``host:port`` or ``unix:/path``."""
        if self.config.uds is not None:
            return f"unix:{self.config.uds}"
        return f"{self.config.host}:{self.port}"

    async def start(self) -> None:
        """Run the lifespan startup, then listen. Raises ``RuntimeError`` if startup fails
        and ``OSError`` if the address is taken."""
        self._lifespan = _Lifespan(self.app)
        await self._lifespan.startup()
        uds = self.config.uds
        if uds is not None:
            sock = bind_unix(uds, self.config.backlog)
            self._uds_inode = _identity(uds)
            self._server = await self.loop.create_unix_server(
                lambda: HttpProtocol(self), sock=sock, backlog=self.config.backlog
            )
            return
        self._server = await self.loop.create_server(
            lambda: HttpProtocol(self),
            self.config.host,
            self.config.port,
            backlog=self.config.backlog,
            reuse_address=True,
        )
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    def _unlink_uds(self) -> None:
        """Remove our socket file (not one a successor already bound at the same path)."""
        uds, inode = self.config.uds, self._uds_inode
        if uds is None or inode is None:
            return
        self._uds_inode = None
        with contextlib.suppress(OSError):
            if _identity(uds) == inode:
                os.unlink(uds)

    def check_drained(self) -> None:
        """Resolve the drain wait once no connection has a request underway."""
        drained = self._drained
        if drained is not None and not drained.done() and all(c.idle for c in self.connections):
            drained.set_result(None)

    async def shutdown(self) -> None:
        """Stop accepting, finish in-flight requests (bounded), close, lifespan shutdown."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        self._unlink_uds()
        for conn in list(self.connections):
            conn.close_if_idle()
        self._drained = self.loop.create_future()
        self.check_drained()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._drained), self.config.drain_timeout)
        for conn in list(self.connections):
            conn._close()
            if conn._task is not None:
                conn._task.cancel()
        if self._lifespan is not None:
            await self._lifespan.shutdown()


class _Lifespan:
    """ASGI lifespan protocol: startup before listening, shutdown after draining."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._supported = True

    async def _main(self) -> None:
        scope: Scope = {"type": "lifespan", "asgi": _ASGI, "state": {}}
        try:
            await self.app(scope, self._inbox.get, self._outbox.put)
        except Exception:
            _log.exception("ASGI lifespan failed")
            self._supported = False
        finally:
            await self._outbox.put({"type": "lifespan.ended"})

    async def startup(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await self._outbox.get()
        if reply["type"] == "lifespan.startup.failed":
            raise RuntimeError(str(reply.get("message") or "application startup failed"))
        if reply["type"] == "lifespan.ended":
            self._supported = False
            if self._task.done() and not self._task.cancelled() and self._task.exception():
                raise RuntimeError("application startup raised")

    async def shutdown(self) -> None:
        if not self._supported or self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._outbox.get()


#: First-generation threshold of the cyclic garbage collector while serving (CPython's is 700).
#: Every request allocates a few hundred short-lived objects that reference counting frees, so
#: at 700 the collector ran every few requests and cost ~10 % of the router's CPU per request
#: (docs/benchmarks.md); real cycles (exceptions with tracebacks) are still collected.
GC_GEN0_THRESHOLD = 20_000


def _tune_gc() -> None:
    """Move start-up objects (modules, models, the app) out of the collector's way and make
    young-generation collections rarer."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


class Companion(Protocol):
    """Another server of the same app started and stopped with the HTTP one (the gRPC port)."""

    async def start(self) -> None:
        """Listen; raise ``OSError`` (or ``RuntimeError``) when it cannot."""

    async def stop(self) -> None:
        """Stop taking requests and finish those underway (bounded)."""


async def _serve(
    app: App,
    config: ServerConfig,
    ready: Callable[[Server], None] | None,
    companions: Sequence[Companion] = (),
) -> int:
    server = Server(app, config)
    try:
        await server.start()
    except (RuntimeError, OSError) as exc:
        _log.error("server did not start: %s", exc)
        return 3
    started: list[Companion] = []
    try:
        for companion in companions:
            await companion.start()
            started.append(companion)
    except (RuntimeError, OSError) as exc:
        _log.error("server did not start: %s", exc)
        await asyncio.gather(server.shutdown(), *(c.stop() for c in started))
        return 3
    _tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(server)
    await stop.wait()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    await asyncio.gather(server.shutdown(), *(c.stop() for c in started))
    return 0


def serve(
    app: App,
    config: ServerConfig,
    *,
    ready: Callable[[Server], None] | None = None,
    companions: Sequence[Companion] = (),
) -> int:
    """Serve ``app`` until SIGTERM/SIGINT, on uvloop when installed; returns the exit code.
    ``companions`` start after the HTTP port listens and drain alongside it."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio's loop works too
        return asyncio.run(_serve(app, config, ready, companions))
    return uvloop.run(_serve(app, config, ready, companions))
