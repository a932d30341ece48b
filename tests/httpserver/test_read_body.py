"""``read_body``, the whole-body reader the runtime and the router share: the body however it
was framed, the app's own limit (below the server's), and a client that leaves mid-body."""

from __future__ import annotations

import asyncio

from modulemesh.httpserver import (
    BodyTooLarge,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    read_body,
)

from .conftest import connection, read_response

events: list[str] = []


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    try:
        body = await read_body(receive, 1000)
        status, answer = 200, b"%d" % len(body)
    except BodyTooLarge:
        status, answer = 413, b"too large"
    except ClientDisconnected:
        events.append("gone")
        return
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", b"%d" % len(answer))]})  # fmt: skip
    await send({"type": "http.response.body", "body": answer})


async def test_whole_body_whatever_the_framing() -> None:
    async with connection(app) as (_, reader, writer):
        writer.write(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n\r\n" + b"a" * 1000)
        assert (await read_response(reader))[::2] == (200, b"1000")
        writer.write(b"POST / HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(3):
            writer.write(b"64\r\n" + b"b" * 100 + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)  # arrives in pieces
        writer.write(b"0\r\n\r\n")
        assert (await read_response(reader))[::2] == (200, b"300")


async def test_the_apps_limit_below_the_servers() -> None:
    async with connection(app, max_body=1 << 20) as (_, reader, writer):
        writer.write(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 1001\r\n\r\n" + b"a" * 1001)
        assert (await read_response(reader))[::2] == (413, b"too large")


async def test_a_client_leaving_mid_body_is_reported() -> None:
    events.clear()
    async with connection(app) as (_, _reader, writer):
        writer.write(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 900\r\n\r\n" + b"a" * 100)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.02)
    assert events == ["gone"]
