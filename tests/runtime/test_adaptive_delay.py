"""Adaptive batch delay over real runtimes: a lone caller pays nothing; the achieved batch size.

Real ``modulemesh runtime`` processes. The bound is a generous 50 ms so that any wait would
stand out from the noise of a shared machine: at concurrency 1 the adaptive runtime serving
``zoo.small_mlp`` (issue 17's small submodule) answers as fast as one that never waits (a
fixed 50 ms runtime, measured alongside, shows what a wait costs). With eight concurrent
callers of a model whose calls cost the same whatever their rows (200 narrow layers), the
achieved mean batch size in ``/stats`` (which the sidecar puts in the envelope) tells a runtime
that waits for company (fixed 50 ms: full batches) from one that never waits (batches of 1 and
7), and the adaptive runtime measures the company rate it decides by. The adaptive rule itself
does not yet fill those batches: it models arrivals as a steady stream, which closed-loop
callers are not (see docs/benchmarks.md and the project notes), so no test claims it does.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modulemesh import headers
from tests.runtime.conftest import Runtime

BODY = {
    "inputs": [
        {
            "name": "input",
            "datatype": "FP32",
            "shape": [1, 256],
            "data": np.random.default_rng(3).standard_normal(256).astype(np.float32).tolist(),
        }
    ]
}


def _start(start_runtime: Callable[..., Runtime], small: Path, *flags: str) -> Runtime:
    return start_runtime(
        "--model", str(small), "--name", "m", "--max-batch-size", "8", "--no-spinning", *flags
    )


def _lone_caller_p50(runtimes: list[Runtime], requests: int) -> list[float]:
    """One caller at a time, taking turns between the runtimes (so drift hits all alike)."""
    seen: list[list[float]] = [[] for _ in runtimes]
    for _ in range(requests):
        for index, runtime in enumerate(runtimes):
            started = time.perf_counter()
            r = runtime.client.post("/v2/models/m/infer", json=BODY)
            seen[index].append(time.perf_counter() - started)
            assert r.status_code == 200, r.text
    return [statistics.median(s) for s in seen]


def test_a_lone_caller_never_waits(
    models: dict[str, Path], start_runtime: Callable[..., Runtime]
) -> None:
    adaptive = _start(start_runtime, models["small"], "--max-delay-ms", "50")
    never = _start(start_runtime, models["small"], "--max-delay-ms", "0", "--no-adaptive-delay")
    fixed = _start(start_runtime, models["small"], "--max-delay-ms", "50", "--no-adaptive-delay")
    p50_adaptive, p50_never, p50_fixed = _lone_caller_p50([adaptive, never, fixed], 60)
    assert p50_fixed > 0.045, "the fixed runtime should show what a 50 ms wait costs"
    assert p50_adaptive < p50_never + 0.01, (p50_adaptive, p50_never)
    stats = adaptive.client.get("/stats").json()
    assert stats["adaptiveDelay"] is True and stats["maxDelayMs"] == 50
    assert stats["meanBatchSize"] == 1.0
    assert stats["companyRate"] == 0.0


async def _closed_loop(port: int, callers: int, rounds: int) -> list[int]:
    """``callers`` keep-alive connections, each sending its next request (pre-encoded, as a
    busy client would) as soon as its answer arrives; returns every answer's batch size."""
    body = json.dumps(BODY).encode()
    raw = (
        f"POST /v2/models/m/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def caller() -> list[int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sizes = []
        try:
            for _ in range(rounds):
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                assert lines[0].split()[1] == "200", head
                fields = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (x.partition(":") for x in lines[1:])
                }
                await reader.readexactly(int(fields["content-length"]))
                sizes.append(int(fields[headers.BATCH_SIZE]))
        finally:
            writer.close()
        return sizes

    per_caller = await asyncio.gather(*(caller() for _ in range(callers)))
    return [size for sizes in per_caller for size in sizes]


def test_achieved_batch_size_tells_waiting_from_not_waiting(
    models: dict[str, Path], start_runtime: Callable[..., Runtime]
) -> None:
    adaptive = _start(start_runtime, models["deep"], "--max-delay-ms", "50")
    never = _start(start_runtime, models["deep"], "--max-delay-ms", "0", "--no-adaptive-delay")
    fixed = _start(start_runtime, models["deep"], "--max-delay-ms", "50", "--no-adaptive-delay")
    callers, rounds = 8, 100
    sizes = {
        name: asyncio.run(_closed_loop(runtime.port, callers, rounds))
        for name, runtime in (("adaptive", adaptive), ("never", never), ("fixed", fixed))
    }
    stats = {
        name: runtime.client.get("/stats").json()
        for name, runtime in (("adaptive", adaptive), ("never", never), ("fixed", fixed))
    }
    assert all(s["rows"] == callers * rounds for s in stats.values()), stats
    assert stats["adaptive"]["companyRate"] > 0, stats["adaptive"]
    # Achieved batch size: rows per model call over the last 100 batches. Without waiting, eight
    # closed-loop callers settle into alternating batches of 1 and 7 (the first answer's caller
    # comes back to an idle model); a fixed wait for the company on its way fills them.
    assert stats["fixed"]["meanBatchSize"] >= 6, stats["fixed"]
    assert statistics.mean(sizes["fixed"]) >= 6, sizes["fixed"]
    assert stats["never"]["meanBatchSize"] < stats["fixed"]["meanBatchSize"], stats
    for s in stats.values():
        assert 1 <= s["meanBatchSize"] <= 8, s
