"""Benchmark of the module runtime against its ceiling and against KServe, in one run.

Same ONNX model (``zoo.mlp``, sized so inference dominates a batch of 32), same closed-loop
load (N keep-alive connections, each sending its next one-row JSON request as soon as the
previous answer arrives) at each concurrency:

(a) onnxruntime in-process at the mean batch size (b) achieved: the ceiling;
(b) ``modulemesh runtime`` with dynamic batching;
(c) ``modulemesh runtime`` with batching off (``--max-batch-size 1``);
(d) KServe's Python ModelServer (``kserve`` from PyPI) serving the same onnxruntime session
    from a ``kserve.Model`` whose ``predict`` calls ``session.run``.

The load generator is a raw asyncio HTTP/1.1 client with pre-encoded requests; to show it is
not the bottleneck it is also run against the runtime's trivial ``/v2/health/live`` and its
own CPU use is reported for every point.

KServe pins older protobuf than the shared venv, so it lives in its own venv and runs this
same file in ``--serve-kserve`` mode (only stdlib at module level for that reason)::

    python3 -m venv /work/kserve-venv && /work/kserve-venv/bin/pip install kserve onnxruntime
    .venv/bin/python bench/runtime.py --kserve-python /work/kserve-venv/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- KServe server


def _session_options(spinning: bool) -> Any:
    """The same onnxruntime session options for (a), (b), (c) and (d)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def serve_kserve(model_path: str, port: int, name: str, spinning: bool) -> None:
    """Run KServe's ModelServer with one sync ``predict`` over an onnxruntime session."""
    import kserve
    import onnxruntime as ort
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    class OnnxModel(kserve.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name)
            self.session = ort.InferenceSession(
                model_path, _session_options(spinning), providers=["CPUExecutionProvider"]
            )
            self.ready = True

        def predict(
            self, payload: InferRequest, headers: dict[str, str] | None = None
        ) -> InferResponse:
            feed = {tensor.name: tensor.as_numpy() for tensor in payload.inputs}
            names = [o.name for o in self.session.get_outputs()]
            results = self.session.run(names, feed)
            outputs = [
                InferOutput(name=n, shape=list(r.shape), datatype="FP32", data=r)
                for n, r in zip(names, results, strict=True)
            ]
            return InferResponse(
                response_id=payload.id or "", model_name=name, infer_outputs=outputs
            )

    import logging

    # KServe logs a trace line per request by default; silence it so (d) is not slowed by
    # logging our own servers do not do.
    for logger in ("kserve.trace", "uvicorn.access"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    kserve.ModelServer(
        http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False
    ).start([OnnxModel()])


# --------------------------------------------------------------------------- load generator


@dataclass
class Point:
    """One measured point: closed-loop load at one concurrency against one target."""

    requests: int
    errors: int
    seconds: float
    p50: float
    p99: float
    client_cpu: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def _point(
    latencies: list[float], errors: int, duration: float, cpu: float, elapsed: float
) -> Point:
    """A closed loop's answers as a Point (the HTTP and the gRPC loop alike)."""
    latencies.sort()
    if not latencies:
        return Point(0, errors, duration, 0.0, 0.0, cpu / elapsed)
    return Point(
        requests=len(latencies),
        errors=errors,
        seconds=duration,
        p50=latencies[len(latencies) // 2],
        p99=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        client_cpu=cpu / elapsed,
    )


async def _read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _closed_loop(
    port: int, raw: bytes, concurrency: int, warmup: float, duration: float
) -> Point:
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + duration

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                writer.write(raw)
                status = await _read_response(reader)
                t1 = time.perf_counter()
                # Count what completes inside the window, whenever it was sent.
                if measure_from <= t1 <= stop_at:
                    if status == 200:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1
        finally:
            writer.close()

    cpu0 = time.process_time()
    await asyncio.sleep(0)
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    cpu = time.process_time() - cpu0
    return _point(latencies, errors, duration, cpu, time.perf_counter() - started)


def _http_request(method: str, path: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def measure(port: int, raw: bytes, concurrency: int, warmup: float, duration: float) -> Point:
    """Closed-loop load on a fresh uvloop; returns throughput, latencies and client CPU."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_closed_loop(port, raw, concurrency, warmup, duration))


# --------------------------------------------------------------------------- servers


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on {port} not ready after {timeout}s")


def _stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        stats: dict[str, Any] = json.load(r)
        return stats


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _proc_cpu(pid: int) -> float:
    """User+system CPU seconds of a process (and its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# --------------------------------------------------------------------------- the run


def _ceiling(model_path: Path, batch: int, seconds: float, spinning: bool) -> float:
    """(a): rows/s of onnxruntime in-process at a given batch size."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(model_path), _session_options(spinning), providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(1).standard_normal((batch, 256)).astype(np.float32)
    for _ in range(3):
        session.run(None, {"input": x})
    runs = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, {"input": x})
        runs += 1
    return batch * runs / (time.perf_counter() - started)


def _ratio(x: float, y: float) -> float:
    return x / y if y else float("inf")


def _row(label: str, c: int, point: Point, extra: str = "") -> str:
    return (
        f"| {label} | {c} | {point.rps:.0f} | {point.p50 * 1000:.1f} | {point.p99 * 1000:.1f} "
        f"| {point.errors} | {point.client_cpu * 100:.0f}% | {extra} |"
    )


def _median_point(points: list[Point]) -> Point:
    """The round with the median throughput (its latencies come with it)."""
    return sorted(points, key=lambda p: p.rps)[len(points) // 2]


def run(args: argparse.Namespace) -> str:
    """Measure every target; return the markdown results table and verdict.

    All servers run at once (idle ones cost nothing) and the targets are measured back to
    back in several rounds per concurrency, so load drift on a shared machine hits them
    alike; the median round per target is reported.
    """
    import numpy as np

    from modulemesh import oip, zoo

    workdir = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    model_path = zoo.save(zoo.mlp(hidden=args.hidden), workdir / "mlp.onnx")
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    body, _ = oip.encode_request({"input": x})
    infer = _http_request("POST", "/v2/models/mlp/infer", body)
    conc = [int(c) for c in args.concurrency.split(",")]
    targets = [t for t in args.targets.split(",") if t != "d" or args.kserve_python]

    def runtime_cmd(port: int, max_batch: int) -> list[str]:
        return [
            sys.executable, "-m", "modulemesh", "runtime", "--model", str(model_path),
            "--name", "mlp", "--port", str(port), "--max-batch-size", str(max_batch),
            "--max-delay-ms", str(args.max_delay_ms), "--max-queue", "1024",
            "--batch-workers", str(args.batch_workers),
            "--log-level", "warning", *([] if args.spinning else ["--no-spinning"]),
            *shlex.split(args.runtime_flags),
        ]  # fmt: skip

    ports = {t: _free_port() for t in targets}
    commands = {
        "b": runtime_cmd(ports.get("b", 0), args.max_batch_size),
        "c": runtime_cmd(ports.get("c", 0), 1),
        "d": [
            str(args.kserve_python), str(Path(__file__).resolve()), "--serve-kserve",
            str(model_path), "--port", str(ports.get("d", 0)),
            *(["--spinning"] if args.spinning else []),
        ],
    }  # fmt: skip
    procs = {
        t: subprocess.Popen(
            commands[t], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for t in targets
    }
    results: dict[str, dict[int, Point]] = {t: {} for t in targets}
    ceiling: dict[int, float] = {}
    batches: dict[int, float] = {}
    server_cpu: dict[str, dict[int, float]] = {t: {} for t in targets}
    try:
        for t in targets:
            _wait_ready(ports[t], "/v2/models/mlp/ready", procs[t])
        live = _http_request("GET", "/v2/health/live")
        gen = measure(ports["b"], live, 32, args.warmup, args.duration)
        generator_line = (
            f"Load generator check: {gen.rps:.0f} req/s at concurrency 32 against the "
            f"runtime's trivial `/v2/health/live` with the client using "
            f"{gen.client_cpu * 100:.0f}% of one core"
        )
        print(generator_line, flush=True)
        for c in conc:
            rounds: dict[str, list[Point]] = {t: [] for t in targets}
            cpus: dict[str, list[float]] = {t: [] for t in targets}
            ceilings: list[float] = []
            mean_batches: list[float] = []
            for r in range(args.rounds):
                for t in targets:
                    before = _stats(ports[t]) if t == "b" else None
                    cpu0 = _proc_cpu(procs[t].pid)
                    point = measure(ports[t], infer, c, args.warmup, args.duration)
                    cpus[t].append((_proc_cpu(procs[t].pid) - cpu0) / (args.warmup + args.duration))
                    rounds[t].append(point)
                    extra = ""
                    if before is not None:
                        after = _stats(ports[t])
                        done = after["batches"] - before["batches"]
                        mean_batches.append((after["rows"] - before["rows"]) / max(1, done))
                        batch = max(1, round(mean_batches[-1]))
                        ceilings.append(_ceiling(model_path, batch, args.duration, args.spinning))
                        extra = (
                            f" mean batch {mean_batches[-1]:.1f}; (a) at batch {batch}: "
                            f"{ceilings[-1]:.0f} rows/s"
                        )
                    print(
                        f"round {r} {t} c={c}: {point.rps:.0f} req/s "
                        f"p50 {point.p50 * 1000:.1f} ms p99 {point.p99 * 1000:.1f} ms "
                        f"errors {point.errors} client cpu {point.client_cpu * 100:.0f}% "
                        f"server cpu {cpus[t][-1] * 100:.0f}%{extra}",
                        flush=True,
                    )
            for t in targets:
                results[t][c] = _median_point(rounds[t])
                server_cpu[t][c] = sorted(cpus[t])[len(cpus[t]) // 2]
            ceiling[c] = sorted(ceilings)[len(ceilings) // 2]
            batches[c] = sorted(mean_batches)[len(mean_batches) // 2]
    finally:
        for proc in procs.values():
            _stop(proc)

    lines = [
        "| target | concurrency | req/s | p50 ms | p99 ms | errors | client CPU | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    labels = {
        "b": "(b) runtime, batching",
        "c": "(c) runtime, no batching",
        "d": "(d) KServe ModelServer",
    }
    for c in conc:
        b = results["b"][c]
        lines.append(
            f"| (a) onnxruntime in-process | {c} | {ceiling[c]:.0f} | | | | | "
            f"rows/s at batch {max(1, round(batches[c]))} |"
        )
        for t in targets:
            point = results[t][c]
            if t == "b":
                note = f"mean batch {batches[c]:.1f}; {_ratio(b.rps, ceiling[c]):.0%} of (a)"
            else:
                note = f"(b)/{labels[t][:3]} {_ratio(b.rps, point.rps):.2f}x"
            note += f"; server CPU {server_cpu[t][c] * 100:.0f}%"
            lines.append(_row(labels[t], c, point, note))
    lines += ["", generator_line + ".", ""]
    c32 = 32 if 32 in conc else conc[-1]
    b = results["b"][c32]
    lines.append(
        f"At concurrency {c32}: (b) = {b.rps:.0f} req/s, p99 {b.p99 * 1000:.1f} ms; "
        f"(a) = {ceiling[c32]:.0f} rows/s -> (b)/(a) = **{_ratio(b.rps, ceiling[c32]):.2f}** "
        "(target >= 0.70)."
    )
    if "d" in results:
        d = results["d"][c32]
        lines.append(
            f"(d) = {d.rps:.0f} req/s, p99 {d.p99 * 1000:.1f} ms -> (b)/(d) = "
            f"**{_ratio(b.rps, d.rps):.2f}x** (target >= 3x); p99 (b) {b.p99 * 1000:.1f} ms vs "
            f"(d) {d.p99 * 1000:.1f} ms (target: no worse)."
        )
    return "\n".join(lines)


DELAY_TARGETS = {
    "fixed-0": ["--max-delay-ms", "0", "--no-adaptive-delay"],
    "fixed-1ms": ["--max-delay-ms", "1", "--no-adaptive-delay"],
}
"""The fixed-delay targets of ``--compare-delays``; ``adaptive`` is added with its bound."""


def compare_delays(args: argparse.Namespace) -> str:
    """Fixed delay 0 vs fixed 1 ms vs adaptive, one small model, rounds alternating.

    The model is issue 17's small submodule: ``zoo.small_mlp()`` (256 -> 1024 ->
    1024 -> 10, ~0.09 ms per row in onnxruntime on a quiet core). The three runtimes run at
    once; every round measures each of them in turn at each concurrency, so load drift on a
    shared machine hits them alike, and the ratios compare medians of the same run.
    """
    import numpy as np

    from modulemesh import oip, zoo

    workdir = Path(tempfile.mkdtemp(prefix="bench-delays-"))
    model_path = zoo.save(zoo.small_mlp(), workdir / "mlp.onnx")
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    body, _ = oip.encode_request({"input": x})
    infer = _http_request("POST", "/v2/models/mlp/infer", body)
    conc = [int(c) for c in args.concurrency.split(",")]
    flags = {
        **DELAY_TARGETS,
        "adaptive": ["--max-delay-ms", f"{args.max_delay_ms:g}", "--adaptive-delay"],
    }
    ports = {t: _free_port() for t in flags}

    def command(t: str) -> list[str]:
        return [
            sys.executable, "-m", "modulemesh", "runtime", "--model", str(model_path),
            "--name", "mlp", "--port", str(ports[t]),
            "--max-batch-size", str(args.max_batch_size), "--max-queue", "1024",
            "--batch-workers", str(args.batch_workers), "--log-level", "warning",
            *([] if args.spinning else ["--no-spinning"]), *flags[t],
            *shlex.split(args.runtime_flags),
        ]  # fmt: skip

    procs = {
        t: subprocess.Popen(
            command(t), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for t in flags
    }
    single = _ceiling(model_path, 1, min(1.0, args.duration), args.spinning)
    points: dict[tuple[str, int], list[tuple[Point, float, float]]] = {}
    try:
        for t in flags:
            _wait_ready(ports[t], "/v2/models/mlp/ready", procs[t])
        names = list(flags)
        for r in range(args.rounds):
            for c in conc:
                # Each round starts with another target, so none always follows the same one.
                for t in names[r % len(names) :] + names[: r % len(names)]:
                    before = _stats(ports[t])
                    cpu0 = _proc_cpu(procs[t].pid)
                    point = measure(ports[t], infer, c, args.warmup, args.duration)
                    cpu = _proc_cpu(procs[t].pid) - cpu0
                    after = _stats(ports[t])
                    rows = after["rows"] - before["rows"]
                    mean_batch = rows / max(1, after["batches"] - before["batches"])
                    per_request = cpu / max(1, rows)
                    points.setdefault((t, c), []).append((point, mean_batch, per_request))
                    print(
                        f"round {r} {t} c={c}: {point.rps:.0f} req/s p50 "
                        f"{point.p50 * 1000:.2f} ms p99 {point.p99 * 1000:.2f} ms errors "
                        f"{point.errors} mean batch {mean_batch:.2f} (envelope "
                        f"{after['meanBatchSize']}) CPU/request {per_request * 1e6:.0f} us",
                        flush=True,
                    )
    finally:
        for proc in procs.values():
            _stop(proc)

    def median(t: str, c: int) -> tuple[Point, float, float]:
        rounds = sorted(points[(t, c)], key=lambda p: p[0].rps)
        return rounds[len(rounds) // 2]

    lines = [
        f"Model zoo.small_mlp(): {1e6 / single:.0f} us per batch-1 call "
        f"in-process; --max-batch-size {args.max_batch_size}, --batch-workers "
        f"{args.batch_workers}, adaptive bound {args.max_delay_ms:g} ms, {args.rounds} rounds "
        f"of {args.duration:g} s per point (median round).",
        "",
        "| delay | concurrency | req/s | p50 ms | p99 ms | mean batch | CPU/request us |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in conc:
        for t in flags:
            point, mean_batch, per_request = median(t, c)
            lines.append(
                f"| {t} | {c} | {point.rps:.0f} | {point.p50 * 1000:.2f} | "
                f"{point.p99 * 1000:.2f} | {mean_batch:.2f} | {per_request * 1e6:.0f} |"
            )
    lines += [
        "",
        "Median over rounds of the ratio within each round (targets measured back to back):",
    ]
    for c in conc:
        for t in DELAY_TARGETS:
            pairs = list(zip(points[("adaptive", c)], points[(t, c)], strict=True))

            def paired(value: Callable[[Point], float], pairs: Any = pairs) -> float:
                ratios = sorted(_ratio(value(a), value(f)) for (a, _, _), (f, _, _) in pairs)
                return ratios[len(ratios) // 2]

            lines.append(
                f"c={c} adaptive/{t}: throughput {paired(lambda p: p.rps):.2f}x, "
                f"p50 {paired(lambda p: p.p50):.2f}x, p99 {paired(lambda p: p.p99):.2f}x"
            )
    return "\n".join(lines)


async def _grpc_closed_loop(
    target: str, payload: bytes, concurrency: int, warmup: float, duration: float
) -> Point:
    """The HTTP closed loop's twin over gRPC: one channel (HTTP/2 streams multiplexed on one
    connection, as gRPC clients do), N callers, each sending its next ModelInfer (serialized
    once, sent as bytes) as soon as the previous answer arrives."""
    import grpc

    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + duration
    async with grpc.aio.insecure_channel(target) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

        async def caller() -> None:
            nonlocal errors
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                ok = True
                try:
                    await infer(payload, timeout=30)
                except grpc.aio.AioRpcError:
                    ok = False
                t1 = time.perf_counter()
                if measure_from <= t1 <= stop_at:
                    if ok:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1

        cpu0 = time.process_time()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        cpu = time.process_time() - cpu0
    return _point(latencies, errors, duration, cpu, time.perf_counter() - started)


def compare_grpc(args: argparse.Namespace) -> str:
    """gRPC vs REST on the same requests, one runtime serving both, rounds alternating.

    Model ``zoo.small_mlp()`` (issue 17's small submodule), the runtime's defaults. The same
    one-row input goes as REST JSON, as REST with the binary tensor extension (tritonclient's
    default) and as a gRPC ModelInfer with raw_input_contents; each round measures the three
    in turn (starting with another each round) at each concurrency, against the same process,
    so load drift hits them alike; ratios are medians of per-round ratios.
    """
    import numpy as np

    from modulemesh import oip, zoo
    from modulemesh.grpc import inference_pb2 as pb

    workdir = Path(tempfile.mkdtemp(prefix="bench-grpc-"))
    model_path = zoo.save(zoo.small_mlp(), workdir / "mlp.onnx")
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    body, _ = oip.encode_request({"input": x})
    binary, length = oip.encode_request({"input": x}, binary=True, binary_data_output=True)
    binary_head = (
        "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {length}\r\nContent-Length: {len(binary)}\r\n\r\n"
    )
    message = pb.ModelInferRequest(model_name="mlp")
    message.inputs.add(name="input", datatype="FP32", shape=[1, 256])
    message.raw_input_contents.append(x.tobytes())
    payload = message.SerializeToString()
    requests = {
        "rest-json": _http_request("POST", "/v2/models/mlp/infer", body),
        "rest-binary": binary_head.encode() + binary,
    }
    conc = [int(c) for c in args.concurrency.split(",")]
    port, grpc_port = _free_port(), _free_port()
    command = [
        sys.executable, "-m", "modulemesh", "runtime", "--model", str(model_path),
        "--name", "mlp", "--port", str(port), "--grpc-port", str(grpc_port),
        "--log-level", "warning", *shlex.split(args.runtime_flags),
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    names = ["rest-json", "rest-binary", "grpc"]
    points: dict[tuple[str, int], list[tuple[Point, float]]] = {}
    try:
        _wait_ready(port, "/v2/models/mlp/ready", proc)
        import uvloop

        for r in range(args.rounds):
            for c in conc:
                for t in names[r % len(names) :] + names[: r % len(names)]:
                    before = _stats(port)
                    cpu0 = _proc_cpu(proc.pid)
                    if t == "grpc":
                        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                            point = runner.run(_grpc_closed_loop(
                                f"127.0.0.1:{grpc_port}", payload, c, args.warmup, args.duration
                            ))  # fmt: skip
                    else:
                        point = measure(port, requests[t], c, args.warmup, args.duration)
                    cpu = _proc_cpu(proc.pid) - cpu0
                    rows = _stats(port)["rows"] - before["rows"]
                    per_request = cpu / max(1, rows)
                    points.setdefault((t, c), []).append((point, per_request))
                    print(
                        f"round {r} {t} c={c}: {point.rps:.0f} req/s p50 "
                        f"{point.p50 * 1000:.2f} ms p99 {point.p99 * 1000:.2f} ms errors "
                        f"{point.errors} server CPU/request {per_request * 1e6:.0f} us "
                        f"client cpu {point.client_cpu * 100:.0f}%",
                        flush=True,
                    )
    finally:
        _stop(proc)

    lines = [
        f"Model zoo.small_mlp(), runtime defaults, one process serving REST and gRPC; "
        f"{args.rounds} rounds of {args.duration:g} s per point (median round).",
        "",
        "| protocol | concurrency | req/s | p50 ms | p99 ms | errors | server CPU/request us "
        "| client CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in conc:
        for t in names:
            rounds = sorted(points[(t, c)], key=lambda p: p[0].rps)
            point, per_request = rounds[len(rounds) // 2]
            lines.append(
                f"| {t} | {c} | {point.rps:.0f} | {point.p50 * 1000:.2f} | "
                f"{point.p99 * 1000:.2f} | {point.errors} | {per_request * 1e6:.0f} | "
                f"{point.client_cpu * 100:.0f}% |"
            )
    lines += ["", "Median over rounds of the ratio within each round:"]
    for c in conc:
        for rest in ("rest-json", "rest-binary"):
            pairs = list(zip(points[("grpc", c)], points[(rest, c)], strict=True))
            throughput = sorted(_ratio(g.rps, h.rps) for (g, _), (h, _) in pairs)
            cpu = sorted(_ratio(gc, hc) for (_, gc), (_, hc) in pairs)
            lines.append(
                f"c={c} grpc/{rest}: throughput {throughput[len(pairs) // 2]:.2f}x, "
                f"server CPU per request {cpu[len(pairs) // 2]:.2f}x"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-kserve", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--kserve-python", help="interpreter with kserve installed, for (d)")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring")
    parser.add_argument("--hidden", type=int, default=4096, help="zoo.mlp hidden width")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--batch-workers", type=int, default=2, help="for (b) and (c)")
    parser.add_argument("--runtime-flags", default="", help="extra flags for (b) and (c)")
    parser.add_argument(
        "--spinning",
        action="store_true",
        help="let onnxruntime's idle threads spin (default off everywhere: 2 shared cores)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per point (median)")
    parser.add_argument("--targets", default="b,c,d", help="servers to measure (b needed)")
    parser.add_argument(
        "--compare-delays",
        action="store_true",
        help="instead: fixed delay 0 vs fixed 1 ms vs adaptive (bound --max-delay-ms) on the "
        "small zoo.small_mlp()",
    )
    parser.add_argument(
        "--compare-grpc",
        action="store_true",
        help="instead: the same requests as REST (JSON, binary) and gRPC to one runtime serving "
        "zoo.small_mlp() with its defaults",
    )
    args, _ = parser.parse_known_args()
    if args.serve_kserve:
        serve_kserve(args.serve_kserve, args.port, "mlp", args.spinning)
        return 0
    sys.path.insert(0, str(ROOT))
    if args.compare_grpc:
        table = compare_grpc(args)
    else:
        table = compare_delays(args) if args.compare_delays else run(args)
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
