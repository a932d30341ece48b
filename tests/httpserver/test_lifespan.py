"""The lifespan hooks apps hand to :func:`run_lifespan`: startup runs before the server
listens, shutdown after it has drained, and a startup that fails stops the server from
starting, with the error's message."""

from __future__ import annotations

import asyncio

import pytest

from modulemesh.httpserver import App, Receive, Scope, Send, Server, ServerConfig, run_lifespan

from .conftest import echo_app, read_response


def hooked_app(events: list[str], fail: bool = False) -> App:
    async def startup() -> None:
        events.append("startup")
        if fail:
            raise OSError("model store unreachable")

    async def shutdown() -> None:
        await asyncio.sleep(0.05)  # a hook that awaits is waited for
        events.append("shutdown")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send, startup, shutdown)
            return
        events.append("request")
        await echo_app(scope, receive, send)

    return app


async def test_startup_before_listening_and_shutdown_after_draining() -> None:
    events: list[str] = []
    server = Server(hooked_app(events), ServerConfig(host="127.0.0.1", port=0))
    await server.start()
    assert events == ["startup"]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /slow?0.2 HTTP/1.1\r\nhost: t\r\n\r\n")
    await asyncio.sleep(0.05)  # the request is in flight when shutdown begins
    stopping = asyncio.create_task(server.shutdown())
    status, _, body = await read_response(reader)
    await asyncio.wait_for(stopping, 10)
    writer.close()
    assert (status, body) == (200, b"/slow|0.2|")
    assert events == ["startup", "request", "shutdown"]


async def test_a_failing_startup_keeps_the_server_from_starting() -> None:
    events: list[str] = []
    server = Server(hooked_app(events, fail=True), ServerConfig(host="127.0.0.1", port=0))
    with pytest.raises(RuntimeError, match="model store unreachable"):
        await server.start()
    assert events == ["startup"]
