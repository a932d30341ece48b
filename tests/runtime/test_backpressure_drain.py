"""Backpressure and graceful drain of a real runtime process.

A bounded queue answers 503 with Retry-After once full while admitted requests still succeed;
SIGTERM with requests in flight lets every one of them finish, answers new requests 503, then
exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

    async def scenario() -> tuple[list[httpx.Response], httpx.Response, dict[str, Any]]:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=runtime.url, timeout=60, limits=limits) as c:
            in_flight = [
                asyncio.create_task(c.post("/v2/models/m/infer", json=body)) for _ in range(6)
            ]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                stats = (await c.get("/stats")).json()
                if stats["inFlight"] >= 6:
                    break
                await asyncio.sleep(0.01)
            runtime.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=runtime.url, timeout=10) as fresh:
                late = await fresh.post("/v2/models/m/infer", json=body)
                ready = (await fresh.get("/v2/health/ready")).json()
            return await asyncio.gather(*in_flight), late, ready

    done, late, ready = asyncio.run(scenario())
    assert [r.status_code for r in done] == [200] * 6
    assert late.status_code == 503 and "draining" in late.json()["error"]
    assert ready["ready"] is False and "draining" in ready["error"]
    assert runtime.proc.wait(30) == 0
    assert "draining" in runtime.log and "drained; exiting" in runtime.log
