"""``spec.policy.propagateHeaders``: the client headers a graph lists reach every module call,
and no others.

A recording TCP tap sits between the router and the real sidecar of module ``embed`` (it only
relays and keeps a copy of what the router sends), so the assertions read the bytes on the
wire. Both steps of a two-step sequence carry the listed headers with the client's values; an
unlisted client header stays behind. Without the policy nothing extra is sent. (The router's
own headers, such as tags and deadline, cannot be listed: validation refuses them.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .conftest import X16, Pool, make_graph, router


class Tap:
    """A TCP relay on 127.0.0.1 in front of ``upstream`` that records what clients send."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.sent = bytearray()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def __enter__(self) -> Tap:
        self._thread.start()
        assert self._ready.wait(10), "tap did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._relay, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bool) -> None:
            while data := await src.read(65536):
                if record:
                    self.sent.extend(data)
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(
            pump(reader, up_writer, True), pump(up_reader, writer, False), return_exceptions=True
        )

    def heads(self) -> list[dict[str, str]]:
        """Header blocks of the requests sent so far (lower-case names)."""
        out = []
        for block in bytes(self.sent).split(b"POST ")[1:]:
            head = block.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            fields = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
            out.append({k.lower(): v for k, v in fields.items()})
        return out


NODES = [
    {"name": "main", "type": "sequence", "steps": [
        {"module": "embed", "inputs": {"input": "request.features"}},
        {"module": "small", "inputs": {"input": "embed.embedding"}},
    ]},
]  # fmt: skip
CLIENT_HEADERS = {
    "x-request-id": "req-42",
    "x-tenant": "acme",
    "x-unlisted": "stays",
}


@pytest.fixture
def taps(pool: Pool) -> Iterator[dict[str, Tap]]:
    with Tap(pool.urls["embed"]) as embed, Tap(pool.urls["small"]) as small:
        yield {"embed": embed, "small": small}


def test_listed_headers_reach_every_module_call(
    pool: Pool, taps: dict[str, Tap], tmp_path: Path
) -> None:
    policy = {"propagateHeaders": ["x-request-id", "x-tenant"]}
    graph = make_graph(
        "propagating", [pool.spec("embed"), pool.spec("small")], NODES, policy=policy
    )
    endpoints = {**pool.urls, **{name: tap.url for name, tap in taps.items()}}
    with router(tmp_path, graph, endpoints) as r:
        answer = r.infer({"features": X16}, headers=CLIENT_HEADERS)
        assert answer.status_code == 200, answer.text
    for name, tap in taps.items():
        (head,) = tap.heads()
        assert head["x-request-id"] == "req-42" and head["x-tenant"] == "acme", (name, head)
        assert "x-unlisted" not in head, (name, head)


def test_without_the_policy_no_client_header_is_passed_on(
    pool: Pool, taps: dict[str, Tap], tmp_path: Path
) -> None:
    graph = make_graph("plain", [pool.spec("embed"), pool.spec("small")], NODES)
    endpoints = {**pool.urls, **{name: tap.url for name, tap in taps.items()}}
    with router(tmp_path, graph, endpoints) as r:
        assert r.infer({"features": X16}, headers=CLIENT_HEADERS).status_code == 200
    for name, tap in taps.items():
        (head,) = tap.heads()
        assert not {"x-request-id", "x-tenant", "x-unlisted"} & set(head), (name, head)
