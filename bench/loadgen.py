"""The closed-loop HTTP load both proxy benchmarks use: pre-encoded requests over the sidecar's
pooled keep-alive client, latencies one at a time, throughput with N concurrent workers, and
the CPU a process used (from /proc), so a bench can show what each hop costs."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
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


def wrk_throughput(port: int, head: bytes, body: bytes, concurrency: int, seconds: float) -> float:
    """Requests per second from ``wrk`` (a native load generator, one thread, ``concurrency``
    keep-alive connections) sending the same request as :func:`throughput`, with the same 30 s
    timeout; a socket error or an answer wrk counts as failed (not 2xx/3xx) stops the bench.

    The Python client costs ~20 us of CPU per request, taken from the same cores as the
    processes under test; wrk costs a few, so less of the comparison is the client's."""
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("--client wrk needs wrk on PATH (hack/deps installs it from Debian)")
    method, path = head.split(b"\r\n", 1)[0].split()[:2]
    headers = [  # what wrk does not write itself
        [part.strip().decode() for part in line.split(b":", 1)]
        for line in head.split(b"\r\n")[1:]
        if b":" in line
        and line.split(b":", 1)[0].strip().lower() not in (b"host", b"content-length")
    ]
    with tempfile.TemporaryDirectory(prefix="mm-wrk-") as tmp:
        (Path(tmp) / "body").write_bytes(body)
        script = Path(tmp) / "request.lua"
        script.write_text(
            f'wrk.method = "{method.decode()}"\n'
            f'local f = io.open("{tmp}/body", "rb"); wrk.body = f:read("*a"); f:close()\n'
            + "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in headers)
        )
        result = subprocess.run(
            [binary, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
             "-s", str(script), f"http://127.0.0.1:{port}{path.decode()}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    out = result.stdout
    for problem in ("Non-2xx or 3xx responses", "Socket errors"):
        if problem in out:
            raise SystemExit(f"wrk against port {port}: {out}")
    match = re.search(r"Requests/sec:\s*([0-9.]+)", out)
    if match is None:
        raise SystemExit(f"wrk printed no rate: {out}")
    return float(match.group(1))


def load_generator(client: str) -> Callable[[int, bytes, bytes, int, float], float]:
    """The concurrency-round measurement for ``--client``: ``python`` (:func:`throughput`) or
    ``wrk`` (:func:`wrk_throughput`), called as ``(port, head, body, concurrency, seconds)``."""
    if client == "wrk":
        return wrk_throughput
    return lambda port, head, body, concurrency, seconds: asyncio.run(
        throughput(port, head, body, concurrency, seconds)
    )


def add_load_arguments(
    parser: argparse.ArgumentParser, *, requests: int, seconds: float, pin: str
) -> None:
    """The options both proxy benches take: round sizes, the load generator and ``--pin``."""
    parser.add_argument("--requests", type=int, default=requests, help="requests per c=1 round")
    parser.add_argument("--seconds", type=float, default=seconds, help="duration of a c=32 round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--client",
        choices=["python", "wrk"],
        default="python",
        help="load generator for the concurrency rounds (wrk: native, needs wrk on PATH)",
    )
    parser.add_argument("--pin", action="store_true", help=pin)


def split_cpus(parser: argparse.ArgumentParser) -> tuple[set[int], set[int]]:
    """``--pin``'s two placements: the first CPU this process may use, and the second."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        parser.error("--pin needs two CPUs")
    return {cpus[0]}, {cpus[1]}
