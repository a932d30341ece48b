"""Requests the server refuses itself: too-large bodies (413), malformed requests (400), slow
request heads (408), and idle keep-alive connections closing."""

from __future__ import annotations

import asyncio

from modulemesh.httpserver import Receive, Scope, Send

from .conftest import connection, read_response, start


async def test_declared_body_over_the_limit_is_413_and_closes() -> None:
    async with connection(max_body=1000) as (_, reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1001\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert status == 413 and headers[b"connection"] == b"close" and b"1000" in body
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_chunked_body_over_the_limit_is_413() -> None:
    async with connection(max_body=1000) as (_, reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%s\r\n" % (800, b"a" * 800))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"%x\r\n%s\r\n" % (800, b"a" * 800))
        status, _, _ = await read_response(reader)
        assert status == 413
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_body_at_the_limit_is_served() -> None:
    async with connection(max_body=1000) as (_, reader, writer):
        writer.write(
            b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n\r\n" + b"a" * 1000
        )
        assert (await read_response(reader))[0] == 200


async def test_malformed_requests_are_400() -> None:
    srv = await start()
    try:
        for junk in (b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
                     b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n"):  # fmt: skip
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(junk)
            status, headers, _ = await read_response(reader)
            assert status == 400 and headers[b"connection"] == b"close", junk
            assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        await srv.shutdown()


async def test_oversized_head_is_400() -> None:
    async with connection(max_head=1024) as (_, reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nx-big: " + b"a" * 2000 + b"\r\n\r\n")
        assert (await read_response(reader))[0] == 400


async def test_slow_request_head_gets_408() -> None:
    async with connection(head_timeout=0.3) as (_, reader, writer):
        writer.write(b"GET /echo HTTP/1.1\r\nhost:")
        started = asyncio.get_running_loop().time()
        status, _, _ = await read_response(reader)
        assert status == 408
        assert asyncio.get_running_loop().time() - started < 3
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_slow_reader_gets_the_whole_streamed_answer() -> None:
    async with connection(read_limit=1024) as (_, reader, writer):
        body = b"z" * (4 * 1024 * 1024)
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % len(body))
        writer.write(body)
        await asyncio.sleep(0.3)  # the server's writes back up meanwhile
        status, _, answer = await read_response(reader)
        assert status == 200 and answer.endswith(body)


async def test_idle_keep_alive_connection_is_closed() -> None:
    async with connection(keep_alive_timeout=0.3) as (_, reader, writer):
        writer.write(b"GET /echo HTTP/1.1\r\nhost: t\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without a response


async def test_a_client_still_sending_reads_the_413() -> None:
    # Refused on its declared length while it keeps sending: the server half-closes and
    # discards the rest (lingering close), so the client's writes do not meet a reset and
    # the 413 is not destroyed before the client reads it.
    async with connection(max_body=1000) as (_, reader, writer):
        size = 2 << 20
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"a" * 65536)
            await writer.drain()
        status, headers, body = await read_response(reader)
        assert status == 413 and headers[b"connection"] == b"close" and b"1000" in body
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_an_answer_before_the_body_arrived_is_read_in_full() -> None:
    async with connection(_early) as (_, reader, writer):
        writer.write(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % (1 << 20))
        await asyncio.sleep(0.05)  # the answer is out before the body starts
        for _ in range(16):
            writer.write(b"a" * 65536)
            await writer.drain()
        status, _, body = await read_response(reader)
        assert (status, body) == (200, b"early")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_a_lingering_close_ends_by_itself() -> None:
    # A refused client that neither stops sending nor closes is cut off: by time here.
    async with connection(max_body=1000) as (srv, reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 5000\r\n\r\n" + b"a" * 10)
        assert (await read_response(reader))[0] == 413
        assert await asyncio.wait_for(reader.read(), 5) == b""  # half-closed at once
        started = asyncio.get_running_loop().time()
        while srv.connections:
            assert asyncio.get_running_loop().time() - started < 5, "lingered for ever"
            await asyncio.sleep(0.05)
        writer.close()


async def _early(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers at once, without reading the request body."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"5")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"early"})


async def test_shutdown_does_not_wait_for_a_lingering_close() -> None:
    srv = await start(_early)
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 5000\r\n\r\n" + b"a" * 10)
    assert (await read_response(reader))[0] == 200
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(srv.shutdown(), 10)
    assert loop.time() - started < 1.0  # the answer is out: nothing underway to drain
    writer.close()


async def test_a_limit_tripped_while_the_app_answers_still_lets_the_client_read_it() -> None:
    # The app has begun its answer when the body runs past the server's limit: the server
    # stops reading and closes after the answer, lingering, since the client is still sending.
    async def slow_answer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()  # the first piece of the body
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"5")]})  # fmt: skip
        await asyncio.sleep(0.3)  # meanwhile the client goes past the limit
        await send({"type": "http.response.body", "body": b"early"})

    async with connection(slow_answer, max_body=1000) as (_, reader, writer):
        writer.write(b"POST /x HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%s\r\n" % (500, b"a" * 500))
        await writer.drain()
        await asyncio.sleep(0.1)
        for _ in range(64):
            writer.write(b"%x\r\n%s\r\n" % (4096, b"a" * 4096))
        await writer.drain()
        status, _, body = await read_response(reader)
        assert (status, body) == (200, b"early")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
