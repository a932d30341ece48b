"""The refresh loop's reads of a router that cannot be reached (issue 14): asked again only
after a growing wait, and reported with the streak's first error until it answers, so a
thousand unreachable routers cost no lookups every interval, and a status does not flap (one
write per graph each time) between equivalent failures, a lookup that fails or times out under
load. Real sockets on 127.0.0.1: a listener that never answers, then none, then a server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modulemesh.operator import handlers


class Silent:
    """Accepts connections (counted) and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    s = Silent()
    yield s
    s.close()


def serve_envelopes(port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"modules": {}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def fetch(endpoint: str) -> tuple[object, str | None]:
    async def go() -> tuple[object, str | None]:
        return await handlers.fetch_envelopes(endpoint)

    return asyncio.run(go())


def test_an_unreachable_router_is_asked_later_and_keeps_its_first_error(silent: Silent) -> None:
    endpoint = f"http://127.0.0.1:{silent.port}"
    url = endpoint + "/envelopes"
    handlers._failing.pop(url, None)

    envelopes, first = fetch(endpoint)
    assert envelopes is None and first is not None and "ReadTimeout after 3s" in first
    assert len(silent.accepted) == 1

    # Within the wait it is not asked: the same error, no new connection.
    assert fetch(endpoint) == (None, first)
    assert len(silent.accepted) == 1

    # Now nothing listens (connection refused), but the streak's first error stands for it.
    silent.close()
    handlers._failing[url].retry_at = 0.0
    assert fetch(endpoint) == (None, first)
    assert handlers._failing[url].streak == 2
    wait = handlers._failing[url].retry_at - handlers.time.monotonic()
    assert wait > 1.5 * handlers.SETTINGS.envelope_interval_s  # the wait grew

    # It answers: read at the next ask, and the streak is over.
    server = serve_envelopes(silent.port)
    try:
        handlers._failing[url].retry_at = 0.0
        assert fetch(endpoint) == ({}, None)
        assert url not in handlers._failing
    finally:
        server.shutdown()
        server.server_close()
