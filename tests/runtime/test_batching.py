"""Dynamic batching under concurrency: every caller gets exactly its own rows back.

Concurrent callers with distinct random rows (1-3 rows each) are checked against onnxruntime
run in-process; requests whose non-batch shapes differ (``zoo.pooler`` over different lengths)
never share a batch; batching off means one request per batch; and the event loop stays
responsive while a long batch runs on the worker thread. The row check runs with one and
with two batch workers (batches computed concurrently).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from modulemesh import headers
from tests.runtime.conftest import Runtime

CALLERS = 24
ROUNDS = 4


def _infer_body(x: np.ndarray[Any, Any], request_id: str) -> dict[str, Any]:
    return {
        "id": request_id,
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}
        ],
    }


async def _callers(
    url: str, make: Callable[[int, int], np.ndarray[Any, Any]]
) -> list[tuple[np.ndarray[Any, Any], dict[str, Any], int]]:
    limits = httpx.Limits(max_connections=CALLERS)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def caller(index: int) -> list[tuple[np.ndarray[Any, Any], dict[str, Any], int]]:
            seen = []
            for round_ in range(ROUNDS):
                x = make(index, round_)
                r = await client.post(
                    "/v2/models/m/infer", json=_infer_body(x, f"{index}-{round_}")
                )
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["id"] == f"{index}-{round_}"
                seen.append((x, body, int(r.headers[headers.BATCH_SIZE])))
            return seen

        results = await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    return [item for per_caller in results for item in per_caller]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_each_caller_gets_its_rows(
    models: dict[str, Path], start_runtime: Callable[..., Runtime], workers: str
) -> None:
    runtime = start_runtime(
        "--batch-workers",
        workers,
        "--model",
        str(models["classifier"]),
        "--name",
        "m",
        "--max-batch-size",
        "16",
        "--max-delay-ms",
        "20",
    )
    session = ort.InferenceSession(str(models["classifier"]), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    inputs = {
        (i, r): rng.standard_normal((1 + (i + r) % 3, 8)).astype(np.float32)
        for i in range(CALLERS)
        for r in range(ROUNDS)
    }
    results = asyncio.run(_callers(runtime.url, lambda i, r: inputs[(i, r)]))
    assert len(results) == CALLERS * ROUNDS
    for x, body, _ in results:
        (out,) = body["outputs"]
        got = np.array(out["data"], dtype=np.float32).reshape(out["shape"])
        assert out["shape"] == [x.shape[0], 3]
        np.testing.assert_allclose(got, session.run(None, {"input": x})[0], rtol=1e-5, atol=1e-6)
    sizes = [size for _, _, size in results]
    assert max(sizes) > 3, f"requests were never batched together: {sizes}"
    assert max(sizes) <= 16
    stats = runtime.client.get("/stats").json()
    assert stats["rows"] == sum(x.shape[0] for x, _, _ in results)
    assert stats["batches"] < CALLERS * ROUNDS
    assert 0 < stats["batchFill"] <= 1


def test_mixed_shapes_never_share_a_batch(
    models: dict[str, Path], start_runtime: Callable[..., Runtime]
) -> None:
    runtime = start_runtime(
        "--model",
        str(models["pooler"]),
        "--name",
        "m",
        "--max-batch-size",
        "32",
        "--max-delay-ms",
        "20",
    )
    # Callers alternate between length 3 and length 5 rows; both kinds are in flight at once.
    results = asyncio.run(
        _callers(
            runtime.url,
            lambda i, r: np.full((1 + i % 2, 3 + 2 * (i % 2)), float(i * 10 + r), np.float32),
        )
    )
    for x, body, _ in results:
        (out,) = body["outputs"]
        assert out["shape"] == [x.shape[0], 1]
        assert out["data"] == [float(x[0, 0])] * x.shape[0]
    assert max(size for _, _, size in results) > 2


def test_batching_off_runs_one_request_per_batch(
    models: dict[str, Path], start_runtime: Callable[..., Runtime]
) -> None:
    runtime = start_runtime(
        "--model", str(models["classifier"]), "--name", "m", "--max-batch-size", "1"
    )
    meta = runtime.client.get("/v2/models/m").json()
    assert meta["parameters"]["batching"] is False
    results = asyncio.run(_callers(runtime.url, lambda i, r: np.ones((1 + i % 3, 8), np.float32)))
    for x, _, size in results:
        assert size == x.shape[0]
    assert runtime.client.get("/stats").json()["batches"] == CALLERS * ROUNDS


def test_event_loop_stays_responsive_during_inference(
    models: dict[str, Path], start_runtime: Callable[..., Runtime]
) -> None:
    runtime = start_runtime("--model", str(models["slow"]), "--name", "m", "--max-batch-size", "1")
    x = np.ones((256, 512), np.float32)

    async def scenario() -> tuple[float, float]:
        async with httpx.AsyncClient(base_url=runtime.url, timeout=60) as client:
            started = time.monotonic()
            heavy = asyncio.create_task(
                client.post("/v2/models/m/infer", json=_infer_body(x, "heavy"))
            )
            await asyncio.sleep(0.05)
            live_started = time.monotonic()
            assert (await client.get("/v2/health/live")).status_code == 200
            live = time.monotonic() - live_started
            assert (await heavy).status_code == 200
            return live, time.monotonic() - started

    live, heavy = asyncio.run(scenario())
    assert live < heavy / 2, f"health took {live:.3f}s while inference took {heavy:.3f}s"
