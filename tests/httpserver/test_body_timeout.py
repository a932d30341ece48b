"""Request bodies that do not arrive in time: a client that sends a head and then withholds or
trickles its body gets 408 and a closed connection after ``body_timeout`` (like a slow head),
while a large body sent at a fair rate, or one the app is slow to read, is served; a late body
of a pipelined request ends the connection after the answer before it."""

from __future__ import annotations

import asyncio

from modulemesh.httpserver import BODY_GRACE_RATE, Receive, Scope, Send

from .conftest import connection, read_response


async def test_a_withheld_body_gets_408_and_the_connection_closes() -> None:
    async with connection(body_timeout=0.4) as (srv, reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n" + b"a" * 10)
        started = asyncio.get_running_loop().time()
        status, headers, body = await read_response(reader)
        waited = asyncio.get_running_loop().time() - started
        assert status == 408 and headers[b"connection"] == b"close"
        assert b"body not received in time" in body
        assert 0.35 < waited < 3
        assert await asyncio.wait_for(reader.read(), 5) == b""
        while srv.connections:  # the server side lets go of it too (lingering is bounded)
            assert asyncio.get_running_loop().time() - started < 6, "connection held"
            await asyncio.sleep(0.05)


async def test_a_trickled_body_gets_408_although_bytes_keep_coming() -> None:
    # One byte every 0.1 s resets no idle clock: the body as a whole is late.
    async with connection(body_timeout=0.5) as (_, reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n\r\n")
        started = asyncio.get_running_loop().time()

        async def trickle() -> None:
            for _ in range(100):
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(trickle())
        try:
            status, _, _ = await read_response(reader)
        finally:
            sender.cancel()
        assert status == 408
        assert asyncio.get_running_loop().time() - started < 3


async def test_a_chunked_body_that_stops_gets_408() -> None:
    async with connection(body_timeout=0.3) as (_, reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"5\r\nhello\r\n")  # and never the last chunk
        assert (await read_response(reader))[0] == 408
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_a_large_body_at_a_fair_rate_outlasts_the_timeout_and_is_served() -> None:
    # 4 x 64 KiB over ~0.9 s with a 0.3 s body timeout: each 64 KiB earns a second more.
    size = 4 * BODY_GRACE_RATE
    async with connection(body_timeout=0.3) as (_, reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % size)
        for _ in range(4):
            writer.write(b"b" * BODY_GRACE_RATE)
            await writer.drain()
            await asyncio.sleep(0.3)
        status, _, answer = await read_response(reader)
        assert status == 200 and len(answer) == len(b"/echo||") + size


async def _late_reader(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads its body only after 1.5 s (longer than the timeout and the grace it earned)."""
    if scope["type"] != "http":
        return
    await asyncio.sleep(1.5)
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    answer = b"%d" % size
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(answer))]})  # fmt: skip
    await send({"type": "http.response.body", "body": answer})


async def test_time_the_server_stops_reading_is_not_counted_against_the_client() -> None:
    # 8 MiB sent at once to an app that reads it only after 1.5 s: the server stops reading
    # past its read-pause mark (256 KiB) and the client, who earned 0.2 s plus well under
    # 0.1 s of grace for what was read, waits on the server, not the other way round.
    size = 8 << 20
    grace = 32 << 20  # bytes per extra second: little grace, so the pause is what matters
    async with connection(_late_reader, body_timeout=0.2, body_grace_rate=grace) as (
        _,
        reader,
        writer,
    ):
        writer.write(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % size)
        writer.write(b"c" * size)
        sender = asyncio.create_task(writer.drain())
        status, _, answer = await read_response(reader)
        await sender
        assert (status, answer) == (200, b"%d" % size)


async def test_a_body_that_arrives_in_time_keeps_the_connection() -> None:
    async with connection(body_timeout=0.3) as (_, reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\n\r\nab")
        await asyncio.sleep(0.1)
        writer.write(b"cd")
        assert await read_response(reader) == (200, {b"content-type": b"text/plain",
                                                     b"content-length": b"11"}, b"/echo||abcd")  # fmt: skip
        await asyncio.sleep(0.5)  # past the body timeout: no stray 408 on the idle connection
        writer.write(b"GET /echo HTTP/1.1\r\nhost: t\r\n\r\n")
        assert (await read_response(reader))[0] == 200


async def test_a_late_pipelined_body_is_dropped_after_the_answer_before_it() -> None:
    # A request's answer is underway when the next request's body runs late: that answer is
    # still sent whole (a 408 cannot overtake it), then the connection closes.
    async with connection(body_timeout=0.3) as (_, reader, writer):
        writer.write(
            b"GET /slow?1.0 HTTP/1.1\r\nhost: t\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nab"
        )
        status, headers, body = await read_response(reader)
        assert (status, body) == (200, b"/slow|1.0|")
        assert headers[b"connection"] == b"close"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # nothing for the late request
