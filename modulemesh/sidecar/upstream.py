"""A lean pooled HTTP/1.1 client to the runtime on loopback or a Unix socket (asyncio
protocol + httptools).

Why not httpx or aiohttp: the sidecar sits on every request's path, and a general-purpose
client costs 100-300 us of Python per request. This one keeps idle keep-alive connections in a
deque, writes the request head and body in one ``write`` and lets httptools parse the
response; the body is handed over chunk by chunk as it arrives (reading pauses when the caller
falls behind), so large bodies stream in both directions.

It speaks only what the sidecar needs: one request at a time per connection, no pipelining,
no TLS, no redirects. A request that fails on a reused idle connection before any response
byte arrived (the runtime closed it) is retried once on a fresh connection, when its body was
fully buffered.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import cast

import httptools

from modulemesh.sidecar.config import Upstream

__all__ = ["BodySource", "Connection", "Pool", "UpstreamError", "UpstreamTimeout"]

_HIGH_WATER = 256 * 1024
"""Buffered response bytes at which reading from the runtime pauses."""
_MAX_IDLE = 128

BodySource = Callable[[], Awaitable[tuple[bytes, bool]]]
"""Returns the next request body chunk and whether more follow (ASGI ``receive`` adapted)."""


class UpstreamError(Exception):
    """The runtime could not be reached, or broke the exchange (the sidecar answers 502)."""


class UpstreamTimeout(UpstreamError):
    """The runtime did not finish answering in time (the sidecar answers 504)."""


class Connection(asyncio.Protocol):
    """One keep-alive connection to the runtime; also the handle of its current response."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self.complete = False
        self._keep_alive = True
        self._error: UpstreamError | None = None
        self._got_bytes = False
        self._head_seen = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed response from runtime: {exc}"))
            self._close()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(UpstreamError(f"runtime closed the connection{f': {exc}' if exc else ''}"))
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()
        self._head_seen = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()

    # -- internals ----------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _on_timeout(self) -> None:
        self._timer = None
        self._fail(UpstreamTimeout("runtime did not answer in time"))
        self._close()

    def _begin(self, timeout: float) -> None:
        self.status = 0
        self.headers = []
        self._chunks.clear()
        self._buffered = 0
        self.complete = False
        self._error = None
        self._got_bytes = False
        self._head_seen = False
        self._timer = self._loop.call_later(timeout, self._on_timeout)

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def _write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise self._error or UpstreamError("runtime closed the connection")
        self.transport.write(data)
        if self._writing_paused:
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    async def _head(self) -> None:
        while not self._head_seen:
            if self._error is not None:
                raise self._error
            await self._wait()

    # -- response API -------------------------------------------------------------------------

    async def read(self) -> bytes:
        """The next response body bytes (everything buffered so far); ``b""`` at the end."""
        while True:
            if self._chunks:
                chunks = self._chunks
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._reading_paused and self.transport is not None:
                    self._reading_paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()

    def release(self) -> None:
        """Give the connection back to the pool, or close it if its exchange did not finish."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.complete and self._keep_alive and not self.closed and self._error is None:
            self.reused = True
            self._pool._idle_return(self)
        else:
            self._close()


class Pool:
    """Keep-alive connections to one runtime; one exchange per connection at a time."""

    def __init__(self, upstream: Upstream, *, connect_timeout: float = 2.0) -> None:
        self.upstream = upstream
        self.connect_timeout = connect_timeout
        self.loop = asyncio.get_running_loop()
        self._idle: deque[Connection] = deque()
        self.host_header = upstream.host_header

    def _idle_return(self, conn: Connection) -> None:
        if len(self._idle) < _MAX_IDLE:
            self._idle.append(conn)
        else:
            conn._close()

    async def _connect(self) -> Connection:
        upstream = self.upstream
        try:
            if upstream.path is not None:
                opening = self.loop.create_unix_connection(lambda: Connection(self), upstream.path)
            else:
                opening = self.loop.create_connection(
                    lambda: Connection(self), upstream.host, upstream.port
                )
            _, protocol = await asyncio.wait_for(opening, self.connect_timeout)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"runtime at {self.upstream.url} did not accept in time") from exc
        except OSError as exc:
            raise UpstreamError(f"runtime unreachable at {self.upstream.url}: {exc}") from exc
        return protocol

    async def _acquire(self) -> Connection:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return await self._connect()

    async def request(
        self,
        head: bytes,
        body: bytes,
        *,
        timeout: float,
        more: BodySource | None = None,
        chunked: bool = False,
    ) -> Connection:
        """Send a request and return once the response head arrived.

        ``head`` is the complete request head (request line, headers, blank line); ``body`` the
        first (or only) body bytes; ``more`` yields further chunks when the body is streamed,
        framed with chunked transfer-encoding when ``chunked``. The caller reads the body with
        :meth:`Connection.read` and must call :meth:`Connection.release`.
        """
        conn = await self._acquire()
        try:
            await self._send(conn, head, body, more, chunked, timeout)
            await conn._head()
            return conn
        except UpstreamTimeout:
            conn.release()
            raise
        except UpstreamError:
            stale = conn.reused and not conn._got_bytes and more is None
            conn.release()
            if not stale:
                raise
        except BaseException:
            conn.release()
            raise
        conn = await self._connect()
        try:
            await self._send(conn, head, body, None, chunked, timeout)
            await conn._head()
        except BaseException:
            conn.release()
            raise
        return conn

    async def _send(
        self,
        conn: Connection,
        head: bytes,
        body: bytes,
        more: BodySource | None,
        chunked: bool,
        timeout: float,
    ) -> None:
        conn._begin(timeout)
        if not chunked:
            await conn._write(head + body if body else head)
            while more is not None:
                chunk, has_more = await more()
                if chunk:
                    await conn._write(chunk)
                if not has_more:
                    break
            return
        await conn._write(head + _chunk(body) if body else head)
        while more is not None:
            chunk, has_more = await more()
            if chunk:
                await conn._write(_chunk(chunk))
            if not has_more:
                break
        await conn._write(b"0\r\n\r\n")

    async def get(self, path: str, *, timeout: float) -> tuple[int, bytes]:
        """A small GET (probes, stats): status and whole body."""
        head = f"GET {path} HTTP/1.1\r\nhost: ".encode() + self.host_header + b"\r\n\r\n"
        conn = await self.request(head, b"", timeout=timeout)
        try:
            parts = []
            while chunk := await conn.read():
                parts.append(chunk)
            return conn.status, b"".join(parts)
        finally:
            conn.release()

    def close(self) -> None:
        """Close idle connections (in-flight ones close when released)."""
        while self._idle:
            self._idle.pop()._close()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
