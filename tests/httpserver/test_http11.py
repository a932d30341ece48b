"""HTTP/1.1 behaviour on the wire: keep-alive, pipelining, chunked bodies both ways, HEAD,
Expect: 100-continue, and app errors becoming 500."""

from __future__ import annotations

import asyncio

from modulemesh.httpserver import Server

from .conftest import read_response


async def _connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def test_keep_alive_serves_many_requests_on_one_connection(server: Server) -> None:
    reader, writer = await _connect(server)
    for i in range(20):
        body = b"x" * i
        writer.write(b"POST /echo?i=%d HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s"
                     % (i, len(body), body))  # fmt: skip
        status, headers, answer = await read_response(reader)
        assert status == 200 and answer == b"/echo|i=%d|%s" % (i, body)
        assert b"connection" not in headers
    writer.close()


async def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    reader, writer = await _connect(server)
    writer.write(
        b"POST /slow?0.2 HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\n\r\na"
        b"GET /echo?second HTTP/1.1\r\nhost: t\r\n\r\n"
        b"POST /echo?third HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\nabc"
    )
    answers = [await read_response(reader) for _ in range(3)]
    assert [a[2] for a in answers] == [b"/slow|0.2|a", b"/echo|second|", b"/echo|third|abc"]
    writer.close()


async def test_chunked_request_body_arrives_whole(server: Server) -> None:
    reader, writer = await _connect(server)
    writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n")
    for part in (b"hello ", b"chunked ", b"world"):
        writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        await writer.drain()
        await asyncio.sleep(0.01)
    writer.write(b"0\r\n\r\n")
    status, _, body = await read_response(reader)
    assert status == 200 and body == b"/echo||hello chunked world"
    writer.close()


async def test_streamed_response_without_length_is_chunked(server: Server) -> None:
    reader, writer = await _connect(server)
    writer.write(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert status == 200 and headers[b"transfer-encoding"] == b"chunked"
    assert body == b"one,two,three"
    writer.write(b"GET /echo HTTP/1.1\r\nhost: t\r\n\r\n")  # connection still usable
    assert (await read_response(reader))[2] == b"/echo||"
    writer.close()


async def test_large_body_streams_through(server: Server) -> None:
    reader, writer = await _connect(server)
    body = bytes(range(256)) * 8192  # 2 MiB: crosses the read-pause high-water mark
    writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % len(body))
    writer.write(body)
    status, _, answer = await read_response(reader)
    assert status == 200 and answer == b"/echo||" + body
    writer.close()


async def test_http10_and_connection_close_close_after_the_answer(server: Server) -> None:
    for request in (b"GET /echo HTTP/1.0\r\n\r\n",
                    b"GET /echo HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"):  # fmt: skip
        reader, writer = await _connect(server)
        writer.write(request)
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers[b"connection"] == b"close"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_head_gets_headers_only(server: Server) -> None:
    reader, writer = await _connect(server)
    writer.write(
        b"HEAD /echo HTTP/1.1\r\nhost: t\r\n\r\nGET /echo?after HTTP/1.1\r\nhost: t\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 7" in head
    assert (await read_response(reader))[2] == b"/echo|after|"
    writer.close()


async def test_expect_continue_gets_100_before_the_body(server: Server) -> None:
    reader, writer = await _connect(server)
    writer.write(
        b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"data")
    assert (await read_response(reader))[2] == b"/echo||data"
    writer.close()


async def test_app_exception_is_a_500_and_the_server_lives_on(server: Server) -> None:
    reader, writer = await _connect(server)
    writer.write(b"GET /boom HTTP/1.1\r\nhost: t\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 500 and headers[b"connection"] == b"close"
    writer.close()
    reader, writer = await _connect(server)
    writer.write(b"GET /echo HTTP/1.1\r\nhost: t\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    writer.close()


async def test_percent_encoded_path_is_decoded_raw_path_kept() -> None:
    seen = {}

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            seen.update(path=scope["path"], raw=scope["raw_path"])
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        else:
            message = await receive()
            await send({"type": message["type"] + ".complete"})

    from .conftest import start

    srv = await start(app)
    try:
        reader, writer = await _connect(srv)
        writer.write(b"GET /v2/models/a%20b HTTP/1.1\r\nhost: t\r\n\r\n")
        assert (await read_response(reader))[0] == 204
        assert seen == {"path": "/v2/models/a b", "raw": b"/v2/models/a%20b"}
        writer.close()
    finally:
        await srv.shutdown()
