"""Backpressure and graceful drain of a real runtime process.

A bounded queue answers 503 with Retry-After once full while admitted requests still succeed;
SIGTERM with requests in flight lets every one of them finish, answers new requests 503, then
exits 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from tests.runtime.conftest import Runtime

ROWS = 64


def _slow_body() -> dict[str, Any]:
    x = np.ones((ROWS, 512), np.float32)
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [ROWS, 512], "data": x.tolist()}]
    }


def test_full_queue_answers_503_with_retry_after(
    models: dict[str, Path], start_runtime: Callable[..., Runtime]
) -> None:
    runtime = start_runtime(
        "--model",
        str(models["slow"]),
        "--name",
        "m",
        "--max-batch-size",
        "1",
        "--max-queue",
        "2",
        "--retry-after",
        "3",
    )
    body = _slow_body()

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=runtime.url, timeout=60, limits=limits) as c:
            return await asyncio.gather(
                *(c.post("/v2/models/m/infer", json=body) for _ in range(12))
            )

    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 503}, codes
    assert codes.count(200) >= 2  # the queue (2) was admitted; the rest was shed
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "3"
            assert "queue is full" in r.json()["error"]
        else:
            assert r.json()["outputs"][0]["shape"] == [ROWS, 10]
    # Once the burst is over the runtime serves normally again.
    assert runtime.client.post("/v2/models/m/infer", json=body).status_code == 200


def test_sigterm_finishes_in_flight_refuses_new_and_exits_zero(
    models: dict[str, Path], start_runtime: Callable[..., Runtime]
) -> None:
    runtime = start_runtime(
        "--model",
        str(models["slow"]),
        "--name",
        "m",
        "--max-batch-size",
        "1",
        "--max-queue",
        "64",
    )
    body = _slow_body()
    payload = json.dumps(body).encode()
    url = urlsplit(runtime.url)

    async def scenario() -> tuple[list[httpx.Response], httpx.Response, dict[str, Any], bytes]:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=runtime.url, timeout=60, limits=limits) as c:
            in_flight = [
                asyncio.create_task(c.post("/v2/models/m/infer", json=body)) for _ in range(6)
            ]
            # One more request whose body is only half sent: it is in flight until the test
            # sends the rest, so the drain provably outlasts the late request below however
            # fast the six finish.
            reader, writer = await asyncio.open_connection(url.hostname, url.port)
            writer.write(
                b"POST /v2/models/m/infer HTTP/1.1\r\nhost: t\r\n"
                b"content-type: application/json\r\ncontent-length: %d\r\n\r\n"
                % len(payload)
                + payload[: len(payload) // 2]
            )
            await writer.drain()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                stats = (await c.get("/stats")).json()
                if stats["inFlight"] >= 7:
                    break
                await asyncio.sleep(0.01)
            runtime.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=runtime.url, timeout=10) as fresh:
                late = await fresh.post("/v2/models/m/infer", json=body)
                ready = (await fresh.get("/v2/health/ready")).json()
            done = await asyncio.gather(*in_flight)
            writer.write(payload[len(payload) // 2 :])
            await writer.drain()
            held = await asyncio.wait_for(reader.readuntil(b"\r\n"), 30)
            writer.close()
            return done, late, ready, held

    done, late, ready, held = asyncio.run(scenario())
    assert [r.status_code for r in done] == [200] * 6
    assert held.startswith(b"HTTP/1.1 200"), held  # begun before SIGTERM: finished, not refused
    assert late.status_code == 503 and "draining" in late.json()["error"]
    assert ready["ready"] is False and "draining" in ready["error"]
    assert runtime.proc.wait(30) == 0
    assert "draining" in runtime.log and "drained; exiting" in runtime.log
