"""The closed-loop HTTP load both proxy benchmarks use: pre-encoded requests over the sidecar's
pooled keep-alive client, latencies one at a time, throughput with N concurrent workers, and
the CPU a process used (from /proc), so a bench can show what each hop costs."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx

from modulemesh.sidecar.config import Upstream
from modulemesh.sidecar.upstream import Pool


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(idle, total) CPU ticks of the whole machine since boot (from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)  # idle + iowait


def idle_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of the machine's CPU time left idle between two :func:`machine_ticks` readings:
    well above 0 under closed-loop load means the pipeline, not the CPU, set the rate."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 0.0


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready after {timeout}s")


async def _exchange(pool: Pool, port: int, head: bytes, body: bytes, timeout: float) -> None:
    """One request; its response read to the end. Anything but 200 stops the bench."""
    conn = await pool.request(head, body, timeout=timeout)
    while await conn.read():
        pass
    conn.release()
    if conn.status != 200:
        raise SystemExit(f"status {conn.status} from port {port}")


async def sequential(port: int, head: bytes, body: bytes, count: int) -> list[float]:
    """``count`` requests one after another; their latencies in seconds."""
    pool = Pool(Upstream("127.0.0.1", port))
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        await _exchange(pool, port, head, body, 10)
        latencies.append(time.perf_counter() - started)
    pool.close()
    return latencies


async def throughput(
    port: int, head: bytes, body: bytes, concurrency: int, seconds: float
) -> float:
    """Requests per second with ``concurrency`` closed-loop workers for ``seconds``."""
    pool = Pool(Upstream("127.0.0.1", port))
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await _exchange(pool, port, head, body, 30)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    pool.close()
    return done / elapsed
