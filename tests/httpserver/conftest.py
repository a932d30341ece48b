"""A small ASGI app served by :mod:`modulemesh.httpserver` in the test's own event loop, and a
raw-socket client, so tests see exactly the bytes on the wire."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from modulemesh.httpserver import Receive, Scope, Send, Server, ServerConfig, run_lifespan


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """``/echo`` answers the request body; ``/stream`` streams 3 chunks; ``/slow`` waits;
    ``/boom`` raises; ``/events`` records what it received."""
    if scope["type"] == "lifespan":
        await run_lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/boom":
        raise RuntimeError("boom")
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    if path == "/slow":
        await asyncio.sleep(float(scope["query_string"] or b"0.3"))
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    answer = path.encode() + b"|" + scope["query_string"] + b"|" + body
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(answer))],
        }
    )
    await send({"type": "http.response.body", "body": answer})


async def start(app: Any = echo_app, **limits: Any) -> Server:
    """A started server on an ephemeral 127.0.0.1 port."""
    server = Server(app, ServerConfig(host="127.0.0.1", port=0, **limits))
    await server.start()
    return server


@contextlib.asynccontextmanager
async def connection(
    app: Any = echo_app, *, read_limit: int = 2**16, **limits: Any
) -> AsyncIterator[tuple[Server, asyncio.StreamReader, asyncio.StreamWriter]]:
    """A started server and one raw connection to it; both closed on the way out."""
    srv = await start(app, **limits)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port, limit=read_limit)
        try:
            yield srv, reader, writer
        finally:
            writer.close()
    finally:
        await asyncio.wait_for(srv.shutdown(), 10)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = await start()
    try:
        yield srv
    finally:
        await asyncio.wait_for(srv.shutdown(), 10)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    """One response (content-length or chunked framing) from ``reader``."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), 10)
    elif headers.get(b"transfer-encoding") == b"chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(data[:-2])
        body = b"".join(parts)
    else:
        body = b""
    return status, headers, body
