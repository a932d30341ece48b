"""A raw HTTP/1.1 client for tests that need exact field lines on the wire: HTTP client
libraries merge a repeated header into one line, which would hide what a server does with two
separate ``x-modulemesh-tags`` lines."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RawResponse:
    """Status, header lines (names lower-case, in order) and body of one answer."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first field line named ``name``, if any."""
        return next((v for n, v in self.headers if n == name), None)

    def json(self) -> Any:
        return json.loads(self.body)


def post(
    url: str, lines: Sequence[tuple[str, str]], body: bytes, *, timeout: float = 30.0
) -> RawResponse:
    """POST ``body`` to ``url`` with exactly these header ``lines`` (one field line each, in
    order, besides host, content-length and connection: close); reads the answer to EOF."""
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1" and parts.port is not None, url
    head = [f"POST {parts.path} HTTP/1.1", f"host: 127.0.0.1:{parts.port}"]
    head += [f"{name}: {value}" for name, value in lines]
    head += [f"content-length: {len(body)}", "connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", parts.port), timeout=timeout) as sock:
        sock.sendall("\r\n".join(head).encode("latin-1") + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    top, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    headers = []
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    length = next((int(v) for n, v in headers if n == "content-length"), len(rest))
    return RawResponse(int(status_line.split()[1]), headers, rest[:length])
