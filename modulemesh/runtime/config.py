"""Runtime settings: one frozen dataclass, filled from flags or ``MODULEMESH_RUNTIME_*`` env.

Every flag ``--some-flag`` can also come from ``MODULEMESH_RUNTIME_SOME_FLAG`` so a pod spec
can configure the runtime through ``env`` alone; an explicit flag wins over the environment.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modulemesh.cli_types import positive_seconds

ENV_PREFIX = "MODULEMESH_RUNTIME_"
PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")
CPU_FALLBACK_CHOICES = ("allow", "refuse")


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything the runtime needs; defaults suit a module pod on loopback."""

    model: str
    sha256: str | None = None
    name: str | None = None
    model_version: str | None = None
    host: str = "127.0.0.1"
    port: int = 8081
    uds: str | None = None
    """Listen on this Unix socket (owner-only) instead of ``host:port``: then no other local
    user can reach the runtime, only its sidecar (``modulemesh run`` uses this)."""
    grpc_port: int = 0
    """The OIP v2 gRPC port on ``host`` (0: no gRPC); a module pod's runtime gets 8083, on
    loopback as its HTTP port (the operator's ``runtime_grpc_port``)."""
    grpc_uds: str | None = None
    """Serve gRPC on this Unix socket instead of ``host:grpc_port`` (``modulemesh run``)."""
    max_batch_size: int = 8
    max_delay_ms: float = 1.0
    """Upper bound of a batch's wait for company (adaptive), or the wait itself (fixed)."""
    adaptive_delay: bool = True
    """Wait only as long as more rows are expected to arrive (batching.DelayPolicy)."""
    max_queue: int = 256
    batch_workers: int = 1
    max_body_bytes: int = 64 * 1024 * 1024
    body_timeout: float = 40.0
    """Seconds a client (the sidecar) has to send a request body once its head is in, plus
    1 s per 64 KiB received; then 408 and the connection closes. Longer than the sidecar's 30 s:
    the sidecar relays a slow client's body as it arrives, so it must be the one to decide."""
    provider: str = "auto"
    cpu_fallback: str = "allow"
    """``refuse``: a GPU provider was asked for and only the CPU one is there: never ready."""
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    spinning: bool = False
    """onnxruntime's idle-thread spin-waiting; off because the module pod shares its CPU with
    the sidecar (spinning threads took it from them: docs/benchmarks.md, sidecar section)."""
    device_id: int = 0
    cache_dir: Path = Path.home() / ".cache" / "modulemesh" / "models"
    ca_bundle: str | None = None
    allow_insecure_http: bool = False
    download_timeout: float = 60.0
    warmup_runs: int = 1
    drain_timeout: float = 30.0
    retry_after: int = 1
    log_level: str = "info"

    @property
    def batching(self) -> bool:
        """Batching is off with ``max_batch_size`` 0 or 1."""
        return self.max_batch_size > 1


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the runtime's flags, each defaulting to its environment variable."""
    defaults = RuntimeConfig(model="")

    def add(flag: str, kind: Any, default: Any, help_text: str, **extra: Any) -> None:
        env = os.environ.get(_env_name(flag))
        value = default if env is None else (kind(env) if kind is not None else env)
        parser.add_argument(
            flag,
            type=kind,
            default=value,
            help=f"{help_text} (env {_env_name(flag)})",
            **extra,
        )

    add("--model", str, None, "model source: path, directory, file:// or https:// URI")
    add("--sha256", str, None, "expected sha256 of the model file (required for https://)")
    add("--name", str, None, "model name served (default: file stem or mount directory name)")
    add("--model-version", str, None, "model version (default: from the ONNX metadata)")
    add("--host", str, defaults.host, "address to listen on")
    add("--port", int, defaults.port, "port to listen on")
    add(
        "--uds",
        str,
        None,
        "listen on this Unix socket path instead of --host/--port (file mode 0600, a missing "
        "directory is made 0700), so only its owner (the sidecar) can connect",
    )
    add(
        "--grpc-port",
        int,
        defaults.grpc_port,
        "port of the OIP v2 gRPC endpoint (inference.GRPCInferenceService) on --host; 0: none "
        "(module pods: 8083)",
    )
    add(
        "--grpc-uds",
        str,
        None,
        "serve gRPC on this Unix socket path instead of --host/--grpc-port",
    )
    add("--max-batch-size", int, defaults.max_batch_size, "max rows per batch; 0 or 1: off")
    add(
        "--max-delay-ms",
        float,
        defaults.max_delay_ms,
        "upper bound of a batch's wait for more requests once a worker is free (0: run at "
        "once); with --no-adaptive-delay every batch that is not full waits this long",
    )
    env_adaptive = os.environ.get(_env_name("--adaptive-delay"))
    parser.add_argument(
        "--adaptive-delay",
        action=argparse.BooleanOptionalAction,
        default=_truthy(env_adaptive) if env_adaptive else defaults.adaptive_delay,
        help="wait for company only while the measured arrival rate says more rows will come "
        "within --max-delay-ms (a lone caller never waits), on by default; --no-adaptive-delay: "
        "always wait --max-delay-ms for a batch that is not full "
        f"(env {_env_name('--adaptive-delay')})",
    )
    add("--max-queue", int, defaults.max_queue, "requests queued before answering 503")
    add(
        "--batch-workers",
        int,
        defaults.batch_workers,
        "batches run concurrently (threads sharing the session)",
    )
    add("--max-body-bytes", int, defaults.max_body_bytes, "request bodies above this get 413")
    add(
        "--body-timeout",
        positive_seconds,
        defaults.body_timeout,
        "seconds to send a request body once its head is in (+1 s per 64 KiB), else 408",
    )
    add(
        "--provider",
        str,
        defaults.provider,
        "execution provider: auto (CUDA if available, else CPU), cpu, cuda, tensorrt",
        choices=PROVIDER_CHOICES,
    )
    add(
        "--cpu-fallback",
        str,
        defaults.cpu_fallback,
        "when a GPU provider is asked for and onnxruntime has only the CPU one: allow (serve on "
        "CPU, reported as the provider) or refuse (never become ready, saying why)",
        choices=CPU_FALLBACK_CHOICES,
    )
    add(
        "--intra-op-threads",
        int,
        0,
        "onnxruntime intra-op threads (0: one per CPU the process may use, from its affinity "
        "and cgroup CPU quota)",
    )
    add("--inter-op-threads", int, 0, "onnxruntime inter-op threads (0: onnxruntime decides)")
    env_spin = os.environ.get(_env_name("--spinning"))
    parser.add_argument(
        "--spinning",
        action=argparse.BooleanOptionalAction,
        default=_truthy(env_spin) if env_spin else defaults.spinning,
        help="let onnxruntime's idle intra-op threads spin-wait for work (onnxruntime's own "
        "default): slightly lower latency on a dedicated machine, but the spinning threads take "
        "CPU from the sidecar and the HTTP loop that share the pod, so off by default "
        f"(env {_env_name('--spinning')})",
    )
    add("--device-id", int, 0, "GPU device id for CUDA/TensorRT")
    add("--cache-dir", Path, defaults.cache_dir, "where downloaded models are cached")
    add("--ca-bundle", str, None, "CA bundle (PEM) to verify https:// model downloads")
    env_insecure = os.environ.get(_env_name("--allow-insecure-http"))
    parser.add_argument(
        "--allow-insecure-http",
        action="store_true",
        default=_truthy(env_insecure) if env_insecure else False,
        help="allow plain http:// model URIs (still sha256-pinned); for tests "
        f"(env {_env_name('--allow-insecure-http')})",
    )
    add("--download-timeout", float, defaults.download_timeout, "download timeout, seconds")
    add("--warmup-runs", int, defaults.warmup_runs, "synthetic full batches run before ready")
    add("--drain-timeout", float, defaults.drain_timeout, "max seconds to drain on SIGTERM")
    add("--retry-after", int, defaults.retry_after, "Retry-After seconds sent with 503")
    add("--log-level", str, defaults.log_level, "log level")


def from_args(args: argparse.Namespace) -> RuntimeConfig:
    """Build the config from parsed arguments; ``--model`` is required (flag or env)."""
    if not args.model:
        raise SystemExit("modulemesh runtime: --model (or MODULEMESH_RUNTIME_MODEL) is required")
    return RuntimeConfig(
        model=args.model,
        sha256=args.sha256,
        name=args.name,
        model_version=args.model_version,
        host=args.host,
        port=args.port,
        uds=args.uds or None,
        grpc_port=args.grpc_port,
        grpc_uds=args.grpc_uds or None,
        max_batch_size=args.max_batch_size,
        max_delay_ms=args.max_delay_ms,
        adaptive_delay=args.adaptive_delay,
        max_queue=args.max_queue,
        batch_workers=args.batch_workers,
        max_body_bytes=args.max_body_bytes,
        body_timeout=args.body_timeout,
        provider=args.provider,
        cpu_fallback=args.cpu_fallback,
        intra_op_threads=args.intra_op_threads,
        inter_op_threads=args.inter_op_threads,
        spinning=args.spinning,
        device_id=args.device_id,
        cache_dir=args.cache_dir,
        ca_bundle=args.ca_bundle,
        allow_insecure_http=args.allow_insecure_http,
        download_timeout=args.download_timeout,
        warmup_runs=args.warmup_runs,
        drain_timeout=args.drain_timeout,
        retry_after=args.retry_after,
        log_level=args.log_level,
    )
