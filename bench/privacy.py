"""Privacy content detectors: their cost per KB of text, and the router's throughput with
detectors on versus off, all in the same run.

Part 1 times every built-in detector (plus a custom RE2 pattern and a national ID format)
and the whole scanner (normalisation included) over three 64 KB texts: English prose with one
email, phone number, card number, IBAN and IP address per KB (``prose``), the same with
accented and CJK words so normalisation takes its slow path (``mixed``), and hostile filler
(digits one to a group, ``1 2 3 ...``) that makes the card detector work hardest. Figures are
microseconds per KB of text, the best of five timings per round.

Part 2 starts one text module (an ONNX Identity over strings, runtime + sidecar) and three
``modulemesh router`` processes over it: no gate (``off``), a gate whose five content
classifiers scan every request and find nothing (``scan``), and one that redacts the email in
each request (``redact``: scan, rewrite the text, re-encode the request). Each request carries
1 KB of text in a BYTES input. Reported: p50 latency at concurrency 1 and throughput at
``--concurrency``, and each one's ratio to ``off``.

    .venv/bin/python bench/privacy.py [--rounds 3] [--requests 500] [--seconds 4] [--pin]
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from loadgen import add_load_arguments, load_generator, sequential, split_cpus, wait_ready
from onnx import TensorProto

from modulemesh import oip, zoo
from modulemesh.api.gate import DetectorKind, PrivacyGate, PrivacyGateSpec
from modulemesh.api.graph import ModuleGraph
from modulemesh.api.resolved import resolve
from modulemesh.localmesh.plan import free_port, plan_mesh
from modulemesh.localmesh.process import Child
from modulemesh.localmesh.supervisor import Mesh
from modulemesh.privacy.detectors import Detector, builtin, custom, normalize
from modulemesh.privacy.redact import ContentScanner

PROSE_KB = (
    "The quarterly review covered onboarding, support response times and the migration plan. "
    "Customer jane.doe@example.org asked for a callback on +44 20 7946 0958 about invoice 7731; "
    "her card 4111 1111 1111 1111 was charged twice and the refund goes to GB82 WEST 1234 5698 "
    "7654 32. The request came from 192.168.10.24 during the maintenance window. Next steps: "
    "confirm the refund, update the ticket, and schedule a follow-up with the billing team so "
    "the duplicate charge does not happen again. The support lead will summarise the findings "
    "for the steering group and attach the relevant logs, screenshots and timelines. Other "
    "items: the new release train starts on Monday; the documentation sprint needs reviewers; "
    "the office move is postponed. "
)
MIXED_KB = PROSE_KB.replace("review", "révision").replace("plan", "計画").replace("team", "équipe")
SIZE = 64 * 1024


def _fill(unit: str) -> str:
    return (unit * (SIZE // len(unit) + 1))[:SIZE]


TEXTS = {
    "prose": _fill(PROSE_KB),
    "mixed": _fill(MIXED_KB),
    "hostile": _fill("1 2 3 4 5 6 7 8 9 "),
}
CONTENT = [
    {"type": "content", "detector": kind}
    for kind in ("email", "phone", "payment-card", "iban", "ipv4")
]


def detectors() -> dict[str, Detector]:
    found = {
        kind.value: builtin(kind)
        for kind in DetectorKind
        if kind not in (DetectorKind.REGEX, DetectorKind.NATIONAL_ID)
    }
    found["national-id:us-ssn"] = builtin(DetectorKind.NATIONAL_ID, "us-ssn")
    found["regex:employee-id"] = custom("employee-id", r"EMP-[0-9]{6}")
    return found


def per_kb(run: Callable[[], Any], size: int, rounds: int) -> float:
    """Microseconds per KB of ``run``: the best of ``5 * rounds`` timings (the least noisy
    estimate of its own cost on a machine shared with other work)."""
    best = float("inf")
    for _ in range(5 * rounds):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best * 1e6 / (size / 1024)


def detector_costs(rounds: int) -> None:
    scanner = ContentScanner.from_gates(
        {"g": PrivacyGateSpec.model_validate({"tags": [{"name": "pii", "classifiers": CONTENT}]})}
    )
    print(f"detector cost, us per KB of text ({SIZE // 1024} KB texts, best of {5 * rounds})")
    print(f"{'detector':22}" + "".join(f"{name:>10}" for name in TEXTS))
    rows: dict[str, list[float]] = {}
    normalised = {name: normalize(text)[0] for name, text in TEXTS.items()}
    for label, detector in detectors().items():
        rows[label] = [
            per_kb(lambda d=detector, t=normalised[n]: list(d.find(t)), SIZE, rounds) for n in TEXTS
        ]
    rows["normalize"] = [per_kb(lambda t=t: normalize(t), SIZE, rounds) for t in TEXTS.values()]
    rows["scanner (5 detectors)"] = [
        per_kb(lambda t=t: scanner.scan([t]), SIZE, rounds) for t in TEXTS.values()
    ]
    for label, values in rows.items():
        print(f"{label:22}" + "".join(f"{v:10.1f}" for v in values))


def graph(name: str, model: Path, gates: list[str]) -> ModuleGraph:
    spec: dict[str, Any] = {
        "modules": [{"name": "text", "model": {"path": str(model)}}],
        "routing": {"entry": "main",
                    "nodes": [{"name": "main", "type": "sequence", "steps": [{"module": "text"}]}]},
    }  # fmt: skip
    if gates:
        spec["gates"] = gates
    return ModuleGraph.model_validate(
        {"apiVersion": "modulemesh.io/v1alpha1", "kind": "ModuleGraph",
         "metadata": {"name": name}, "spec": spec}
    )  # fmt: skip


def gate(name: str, action: str) -> PrivacyGate:
    return PrivacyGate.model_validate(
        {"apiVersion": "modulemesh.io/v1alpha1", "kind": "PrivacyGate", "metadata": {"name": name},
         "spec": {"tags": [{"name": "pii", "action": action, "classifiers": CONTENT}]}}
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    add_load_arguments(
        parser, requests=500, seconds=4.0, pin="the module on CPU 0; routers and client on CPU 1"
    )
    args = parser.parse_args()
    detector_costs(args.rounds)
    load = load_generator(args.client)
    module_cpus: set[int] | None = None
    router_cpus: set[int] | None = None
    if args.pin:
        module_cpus, router_cpus = split_cpus(parser)
        os.sched_setaffinity(0, module_cpus)

    tmp = Path(tempfile.mkdtemp(prefix="mm-bench-privacy-"))
    model = zoo.save(zoo.identity(name="text", elem_type=TensorProto.STRING, width=1),
                     tmp / "text.onnx")  # fmt: skip
    plan = plan_mesh(graph("pool", model, []), [], tmp, router_port=free_port())
    mesh = Mesh(plan, log_dir=tmp / "logs")
    routers: dict[str, tuple[Child, int]] = {}
    try:
        for m in plan.modules:
            mesh.start_module(m.name)
        for m in plan.modules:
            mesh.wait_module(m.name, time.monotonic() + 120)
        if router_cpus is not None:
            os.sched_setaffinity(0, router_cpus)
        endpoints = {m.name: m.url for m in plan.modules}
        setups = {"off": [], "scan": [gate("scan", "tag")], "redact": [gate("redact", "redact")]}
        for name, gates in setups.items():
            config = tmp / f"{name}.json"
            names = [g.metadata.name for g in gates]
            config.write_text(resolve(graph(name, model, names), gates, endpoints).dumps())
            port = free_port()
            routers[name] = (
                Child(f"router-{name}", [sys.executable, "-m", "modulemesh", "router", "--config",
                      str(config), "--host", "127.0.0.1", "--port", str(port),
                      "--log-level", "warning"], log_dir=tmp / "logs"),
                port,
            )  # fmt: skip
        for _, port in routers.values():
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready")

        clean = (PROSE_KB.split(" Customer")[0] + " ") * 12
        clean = clean[:1024]
        with_email = ("write to jane.doe@example.org " + clean)[:1024]
        bodies = {
            "off": clean,
            "scan": clean,
            "redact": with_email,
        }
        targets: dict[str, tuple[int, bytes, bytes]] = {}
        for name, (_, port) in routers.items():
            body, _ = oip.encode_request(
                {"input": np.array([[bodies[name].encode()]], dtype=object)}
            )
            head = (f"POST /v2/models/{name}/infer HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                    f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
                    ).encode()  # fmt: skip
            targets[name] = (port, head, body)
        for port, head, body in targets.values():  # warm-up
            asyncio.run(sequential(port, head, body, 100))
        p50: dict[str, list[float]] = {k: [] for k in targets}
        rps: dict[str, list[float]] = {k: [] for k in targets}
        for _ in range(args.rounds):
            for name, (port, head, body) in targets.items():
                p50[name].append(
                    statistics.median(asyncio.run(sequential(port, head, body, args.requests)))
                )
            for name, (port, head, body) in targets.items():
                rps[name].append(load(port, head, body, args.concurrency, args.seconds))
        med = {k: statistics.median(v) * 1000 for k, v in p50.items()}
        thr = {k: statistics.median(v) for k, v in rps.items()}
        placement = (
            f"pinned: module {sorted(module_cpus)}, routers+client {sorted(router_cpus)}"
            if module_cpus is not None and router_cpus is not None
            else "unpinned"
        )
        print()
        print(
            f"router with detectors, 1 KB text per request: rounds={args.rounds} "
            f"requests={args.requests} seconds={args.seconds} cpus={os.cpu_count()} "
            f"client={args.client} {placement}"
        )
        print(
            f"{'router':8} {'p50 c=1 (ms)':>13} {'rps c=' + str(args.concurrency):>11} "
            f"{'rps/off':>8}"
        )
        for k in targets:
            print(f"{k:8} {med[k]:13.3f} {thr[k]:11.0f} {thr[k] / thr['off']:8.3f}")
        print(f"added by scanning, p50: {med['scan'] - med['off']:.3f} ms")
        print(f"added by redacting, p50: {med['redact'] - med['off']:.3f} ms")
    finally:
        for child, _ in routers.values():
            child.stop()
        mesh.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
