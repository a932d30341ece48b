"""Graceful shutdown of a real server process: SIGTERM lets in-flight requests finish, refuses
new connections, runs the lifespan shutdown and exits 0."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .conftest import read_response

SERVE = """
import sys
from modulemesh.httpserver import ServerConfig, serve
from tests.httpserver.conftest import echo_app

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        async def logged_send(message):
            print(message["type"], flush=True)
            await send(message)
        return await echo_app(scope, receive, logged_send)
    return await echo_app(scope, receive, send)

sys.exit(serve(app, ServerConfig(port=int(sys.argv[1]), drain_timeout=5),
               ready=lambda s: print("listening", flush=True)))
"""

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_sigterm_drains_in_flight_then_exits_zero() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(port)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        while "listening" not in proc.stdout.readline():
            assert time.monotonic() < deadline and proc.poll() is None
        busy_r, busy_w = await asyncio.open_connection("127.0.0.1", port)
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
        idle_w.write(b"GET /echo HTTP/1.1\r\nhost: t\r\n\r\n")
        assert (await read_response(idle_r))[0] == 200
        busy_w.write(b"GET /slow?1.0 HTTP/1.1\r\nhost: t\r\n\r\n")
        await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(idle_r.read(), 5) == b""  # idle connection closed
        status, headers, body = await read_response(busy_r)  # in-flight one finishes
        assert status == 200 and body == b"/slow|1.0|" and headers[b"connection"] == b"close"
        assert proc.wait(10) == 0
        output = proc.stdout.read()
        assert "lifespan.shutdown.complete" in output
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            refused = False
        except OSError:
            refused = True
        assert refused
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
