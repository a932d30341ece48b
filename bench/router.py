"""Router overhead: a module called directly (through its sidecar) vs the same module behind
a 1-step graph, a 3-step sequence and a 3-way ensemble, all measured in the same run.

Starts three real modules (runtime + sidecar each, an 8 -> 8 ``tanh(x @ W)`` model so steps
chain) with :mod:`modulemesh.localmesh`, and three ``modulemesh router`` processes. The client
is the lean httptools keep-alive client the sidecar uses, so its own cost stays small on a
2-core machine (``--client wrk``: the native load generator wrk for the concurrency rounds).
Reported, as medians over alternating rounds:

* p50 latency at concurrency 1 and the router's added time per hop
  (1-step: graph - direct; 3-step: (graph - 3 x direct) / 3; ensemble: graph - direct, the
  three calls run in parallel) -- target <= 1 ms per hop;
* throughput at concurrency 32, and the 1-step graph's share of direct -- target >= 0.80.

``--pin`` models separate pods with their own CPUs, as the operator deploys them: every module
process (runtime and sidecar) gets CPU 0, the routers and the client CPU 1, so a router's work
no longer comes out of the CPU of the module it calls. Without it all processes share every CPU.

    .venv/bin/python bench/router.py [--rounds 3] [--requests 1000] [--seconds 4] [--pin]
        [--client python|wrk]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
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
from modulemesh.api.graph import ModuleGraph
from modulemesh.api.resolved import resolve
from modulemesh.localmesh.plan import free_port, plan_mesh
from modulemesh.localmesh.process import Child
from modulemesh.localmesh.supervisor import Mesh

MODULES = ("m1", "m2", "m3")


def graph(name: str, nodes: list[dict[str, object]], model: Path) -> ModuleGraph:
    modules = [{"name": m, "model": {"path": str(model)}} for m in MODULES]
    return ModuleGraph.model_validate(
        {"apiVersion": "modulemesh.io/v1alpha1", "kind": "ModuleGraph", "metadata": {"name": name},
         "spec": {"modules": modules, "routing": {"entry": "main", "nodes": nodes}}}
    )  # fmt: skip


GRAPHS: dict[str, list[dict[str, object]]] = {
    "one": [{"name": "main", "type": "sequence", "steps": [{"module": "m1"}]}],
    "seq3": [{"name": "main", "type": "sequence", "steps": [
        {"module": "m1"},
        {"module": "m2", "inputs": {"input": "m1.embedding"}},
        {"module": "m3", "inputs": {"input": "m2.embedding"}},
    ]}],
    "ens3": [{"name": "main", "type": "ensemble", "merge": "mean",
              "steps": [{"module": m} for m in MODULES]}],
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    add_load_arguments(
        parser, requests=1000, seconds=4.0, pin="modules on CPU 0; routers and client on CPU 1"
    )
    args = parser.parse_args()
    load = load_generator(args.client)
    module_cpus: set[int] | None = None
    router_cpus: set[int] | None = None
    if args.pin:
        module_cpus, router_cpus = split_cpus(parser)
        os.sched_setaffinity(0, module_cpus)  # inherited by the module processes started next

    tmp = Path(tempfile.mkdtemp(prefix="mm-bench-router-"))
    model = zoo.save(zoo.embedder(name="chain", features=8, dimensions=8), tmp / "chain.onnx")
    plan = plan_mesh(graph("pool", GRAPHS["one"], model), [], tmp, router_port=free_port())
    mesh = Mesh(plan, log_dir=tmp / "logs")
    routers: dict[str, tuple[Child, int]] = {}
    try:
        for m in plan.modules:
            mesh.start_module(m.name)
        for m in plan.modules:
            mesh.wait_module(m.name, time.monotonic() + 120)
        if router_cpus is not None:
            os.sched_setaffinity(0, router_cpus)  # the routers and the client
        endpoints = {m.name: m.url for m in plan.modules}
        for name, nodes in GRAPHS.items():
            config = tmp / f"{name}.json"
            config.write_text(resolve(graph(name, nodes, model), [], endpoints).dumps())
            port = free_port()
            routers[name] = (
                Child(f"router-{name}", [sys.executable, "-m", "modulemesh", "router", "--config",
                      str(config), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                      log_dir=tmp / "logs"),
                port,
            )  # fmt: skip
        for _, port in routers.values():
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready")

        body, _ = oip.encode_request(
            {"input": np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)}
        )

        def head(path: str) -> bytes:
            return (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n\r\n").encode()  # fmt: skip

        m1 = plan.modules[0]
        targets = {"direct": (m1.sidecar_port, head("/v2/models/m1/infer"))}
        for name, (_, port) in routers.items():
            targets[name] = (port, head(f"/v2/models/{name}/infer"))
        for port, h in targets.values():  # warm-up
            asyncio.run(sequential(port, h, body, 200))
        p50: dict[str, list[float]] = {k: [] for k in targets}
        rps: dict[str, list[float]] = {k: [] for k in targets}
        router_cpu_us: list[float] = []
        idle: dict[str, list[float]] = {k: [] for k in targets}
        one_pid = routers["one"][0].pid
        for _ in range(args.rounds):
            for name, (port, h) in targets.items():
                p50[name].append(
                    statistics.median(asyncio.run(sequential(port, h, body, args.requests)))
                )
            for name, (port, h) in targets.items():
                before, t0, ticks = cpu_seconds(one_pid), time.perf_counter(), machine_ticks()
                rate = load(port, h, body, args.concurrency, args.seconds)
                idle[name].append(idle_share(ticks, machine_ticks()))
                rps[name].append(rate)
                if name == "one":
                    count = rate * (time.perf_counter() - t0)
                    router_cpu_us.append((cpu_seconds(one_pid) - before) / count * 1e6)
        med = {k: statistics.median(v) * 1000 for k, v in p50.items()}
        thr = {k: statistics.median(v) for k, v in rps.items()}
        d = med["direct"]
        placement = (
            f"pinned: modules {sorted(module_cpus)}, routers+client {sorted(router_cpus)}"
            if module_cpus is not None and router_cpus is not None
            else "unpinned"
        )
        print(
            f"rounds={args.rounds} requests={args.requests} seconds={args.seconds} "
            f"cpus={os.cpu_count()} client={args.client} {placement}"
        )
        print(
            f"{'target':8} {'p50 c=1 (ms)':>13} {'rps c=' + str(args.concurrency):>11} "
            f"{'rps/direct':>10} {'idle':>5}"
        )
        for k in targets:
            print(
                f"{k:8} {med[k]:13.3f} {thr[k]:11.0f} {thr[k] / thr['direct']:10.3f} "
                f"{statistics.median(idle[k]):5.2f}"
            )
        print(f"added per hop, 1-step graph:   {med['one'] - d:7.3f} ms  (target <= 1 ms)")
        print(
            f"added per hop, 3-step sequence: {(med['seq3'] - 3 * d) / 3:7.3f} ms  (target <= 1 ms)"
        )
        print(f"added, 3-way ensemble (parallel): {med['ens3'] - d:7.3f} ms")
        print(
            f"1-step graph throughput / direct: {thr['one'] / thr['direct']:.3f}  (target >= 0.80)"
        )
        print(f"1-step router CPU per request at c={args.concurrency}: "
              f"{statistics.median(router_cpu_us):.0f} us")  # fmt: skip
    finally:
        for child, _ in routers.values():
            child.stop()
        mesh.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
