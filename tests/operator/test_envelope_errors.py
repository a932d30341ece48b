"""Why the operator could not read a router's envelopes, as the status shows it: the address
tried, what failed (connection refused, timeout, an HTTP error, an answer of the wrong form)
and what to check. Real sockets and HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modulemesh.operator.handlers import fetch_envelopes


def _serve(status: int, body: bytes) -> tuple[ThreadingHTTPServer, threading.Thread]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 with nobody listening: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_connection_refused_names_the_address_and_what_to_check(refused_port: int) -> None:
    envelopes, error = asyncio.run(fetch_envelopes(f"http://127.0.0.1:{refused_port}"))
    assert envelopes is None and error is not None
    assert f"unreachable at http://127.0.0.1:{refused_port}/envelopes: ConnectError (" in error
    assert "refused" in error.lower()
    assert "router pods are Ready" in error and "127.0.0.1 resolves and is reachable" in error


def test_a_router_that_never_answers_times_out_with_the_time() -> None:
    with socket.socket() as sock:  # listening, never accepted: the request never gets an answer
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        port = sock.getsockname()[1]
        envelopes, error = asyncio.run(fetch_envelopes(f"http://127.0.0.1:{port}/"))
    assert envelopes is None and error is not None
    assert f"at http://127.0.0.1:{port}/envelopes: ReadTimeout" in error
    assert "after 3s" in error


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (503, b'{"error": "starting"}', "the router answered HTTP 503"),
        (200, b"<html>not json</html>", "not in the expected form"),
        (200, b'{"modules": []}', "not in the expected form"),
    ],
)
def test_bad_answers_say_what_was_wrong(status: int, body: bytes, expected: str) -> None:
    server, thread = _serve(status, body)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        envelopes, error = asyncio.run(fetch_envelopes(url))
    finally:
        server.shutdown()
        thread.join(5)
    assert envelopes is None and error is not None
    assert f"{url}/envelopes" in error and expected in error
