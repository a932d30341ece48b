"""Sidecar overhead: the same runtime measured directly and through its sidecar, same run.

Starts one real runtime (``modulemesh runtime``) and one sidecar in front of it, then measures
with a lean keep-alive client (the sidecar's own httptools client, so the client's cost stays
small on a 2-core machine; ``--client wrk``: the native load generator wrk for the
concurrency rounds):

* p50 latency at concurrency 1, direct vs through the sidecar (added ms; target <= 1 ms);
* throughput at concurrency 32, direct vs through the sidecar (ratio; target >= 0.90).

Direct and sidecar rounds alternate, and the median of the rounds is reported, so drift on a
shared machine affects both sides alike.

``--pin`` models per-container CPU as in a pod: the runtime (every thread) gets CPU 0, the
sidecar and the client share CPU 1, so the sidecar's work no longer comes out of the runtime's
CPU. Without it all processes share every CPU.

    .venv/bin/python bench/sidecar.py [--model classifier|mlp] [--rounds 3] [--pin]
        [--client python|wrk]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from loadgen import (
    add_load_arguments,
    cpu_seconds,
    idle_share,
    load_generator,
    machine_ticks,
    sequential,
    split_cpus,
    wait_ready,
)

from modulemesh import oip, zoo
from modulemesh.localmesh.plan import free_port

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["classifier", "mlp"], default="classifier")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    add_load_arguments(
        parser, requests=2000, seconds=5.0, pin="runtime on CPU 0; sidecar and client on CPU 1"
    )
    args = parser.parse_args()
    load = load_generator(args.client)
    runtime_cpus: set[int] | None = None
    proxy_cpus: set[int] | None = None
    if args.pin:
        runtime_cpus, proxy_cpus = split_cpus(parser)
        os.sched_setaffinity(0, proxy_cpus)  # the client

    def pinned(cpus: set[int] | None) -> Callable[[], None] | None:
        # Set in the child before exec, so every thread the process starts inherits it.
        return None if cpus is None else lambda: os.sched_setaffinity(0, cpus)

    tmp = Path(tempfile.mkdtemp(prefix="mm-bench-sidecar-"))
    if args.model == "classifier":
        model, features = zoo.classifier(name="bench"), 8
    else:
        model, features = zoo.mlp(name="bench"), 256
    path = zoo.save(model, tmp / "bench.onnx")
    runtime_port, sidecar_port = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "modulemesh", "runtime", "--model", str(path), "--name",
             "bench", "--host", "127.0.0.1", "--port", str(runtime_port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "runtime.log", "wb"),  # noqa: SIM115
            preexec_fn=pinned(runtime_cpus),
        ),
        subprocess.Popen(
            [sys.executable, "-m", "modulemesh", "sidecar", "--module", "bench", "--upstream",
             f"http://127.0.0.1:{runtime_port}", "--host", "127.0.0.1", "--port",
             str(sidecar_port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "sidecar.log", "wb"),  # noqa: SIM115
            preexec_fn=pinned(proxy_cpus),
        ),
    ]  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{runtime_port}/v2/health/ready")
        wait_ready(f"http://127.0.0.1:{sidecar_port}/readyz")
        rng = np.random.default_rng(0)
        body, _ = oip.encode_request(
            {"input": rng.standard_normal((args.rows, features)).astype(np.float32)}
        )
        head = (
            b"POST /v2/models/bench/infer HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        targets = {"direct": runtime_port, "sidecar": sidecar_port}
        for port in targets.values():  # warm-up
            asyncio.run(sequential(port, head, body, 200))
        p50: dict[str, list[float]] = {k: [] for k in targets}
        rps: dict[str, list[float]] = {k: [] for k in targets}
        cpu_us: dict[str, list[float]] = {"runtime": [], "sidecar": [], "runtime direct": []}
        idle: dict[str, list[float]] = {k: [] for k in targets}
        pids = {"runtime": procs[0].pid, "sidecar": procs[1].pid}
        for _ in range(args.rounds):
            for name, port in targets.items():
                lat = asyncio.run(sequential(port, head, body, args.requests))
                p50[name].append(statistics.median(lat))
            for name, port in targets.items():
                before = {k: cpu_seconds(pid) for k, pid in pids.items()}
                t0, ticks = time.perf_counter(), machine_ticks()
                rate = load(port, head, body, args.concurrency, args.seconds)
                count = rate * (time.perf_counter() - t0)
                idle[name].append(idle_share(ticks, machine_ticks()))
                rps[name].append(rate)
                used = {k: (cpu_seconds(pid) - before[k]) / count * 1e6 for k, pid in pids.items()}
                if name == "sidecar":  # CPU per request through the sidecar, both processes
                    cpu_us["runtime"].append(used["runtime"])
                    cpu_us["sidecar"].append(used["sidecar"])
                else:
                    cpu_us["runtime direct"].append(used["runtime"])
        d50, s50 = statistics.median(p50["direct"]), statistics.median(p50["sidecar"])
        drps, srps = statistics.median(rps["direct"]), statistics.median(rps["sidecar"])
        placement = (
            f"pinned: runtime {sorted(runtime_cpus)}, sidecar+client {sorted(proxy_cpus)}"
            if runtime_cpus is not None and proxy_cpus is not None
            else "unpinned"
        )
        print(
            f"model={args.model} rows={args.rows} rounds={args.rounds} cpus={os.cpu_count()} "
            f"{placement}"
        )
        print(
            f"c=1  p50 direct  {d50 * 1000:8.3f} ms   rounds {[round(x * 1000, 3) for x in p50['direct']]}"
        )
        print(
            f"c=1  p50 sidecar {s50 * 1000:8.3f} ms   rounds {[round(x * 1000, 3) for x in p50['sidecar']]}"
        )
        print(
            f"c=1  added p50   {(s50 - d50) * 1000:8.3f} ms   (target <= 1 ms)  ratio {s50 / d50:.2f}"
        )
        print(
            f"c={args.concurrency} rps direct  {drps:8.0f}      rounds {[round(x) for x in rps['direct']]}"
        )
        print(
            f"c={args.concurrency} rps sidecar {srps:8.0f}      rounds {[round(x) for x in rps['sidecar']]}"
        )
        print(f"c={args.concurrency} throughput ratio {srps / drps:.3f}   (target >= 0.90)")
        print(
            f"c={args.concurrency} CPU per request through the sidecar: sidecar "
            f"{statistics.median(cpu_us['sidecar']):.0f} us, runtime "
            f"{statistics.median(cpu_us['runtime']):.0f} us (runtime called directly: "
            f"{statistics.median(cpu_us['runtime direct']):.0f} us)"
        )
        print(
            f"c={args.concurrency} machine idle: direct {statistics.median(idle['direct']):.2f}, "
            f"sidecar {statistics.median(idle['sidecar']):.2f}"
        )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
