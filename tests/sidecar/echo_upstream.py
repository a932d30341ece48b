"""A tiny HTTP peer standing in for the runtime where a test needs to see what the sidecar sent
(headers, streamed bodies) or needs a slow or large answer. Run: ``python echo_upstream.py PORT``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from typing import Any

from modulemesh.httpserver import ServerConfig, serve


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    digest = hashlib.sha256()
    size = 0
    chunks = 0
    while True:
        message = await receive()
        body = message.get("body", b"")
        digest.update(body)
        size += len(body)
        chunks += 1
        if not message.get("more_body", False):
            break
    if path.startswith("/v2/slow"):
        await asyncio.sleep(2.0)
    if path.startswith("/v2/big/"):
        total = int(path.rsplit("/", 1)[1])
        block = bytes(range(256)) * 256  # 64 KiB
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/octet-stream"),
                    (b"content-length", str(total).encode()),
                ],
            }
        )
        sent = 0
        while sent < total:
            part = block[: min(len(block), total - sent)]
            sent += len(part)
            await send({"type": "http.response.body", "body": part, "more_body": sent < total})
        return
    status = 200
    if path == "/v2/health/ready":
        answer: dict[str, Any] = {}
    else:
        answer = {
            "method": scope["method"],
            "path": path,
            "query": scope["query_string"].decode(),
            "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
            "size": size,
            "sha256": digest.hexdigest(),
        }
    body = json.dumps(answer).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-modulemesh-envelope", b"v=1;m=spoofed;s=Healthy"),
                (b"x-modulemesh-queue-depth", b"3"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    sys.exit(serve(app, ServerConfig(host="127.0.0.1", port=int(sys.argv[1]), max_body=None)))
