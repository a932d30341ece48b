"""``modulemesh sidecar``: guard one module and publish its health envelope.

Every flag can also come from a ``MODULEMESH_SIDECAR_<FLAG>`` environment variable (e.g.
``MODULEMESH_SIDECAR_CLEARANCE=pii,eu``), which is how the operator configures the container.
Only light imports here; the server and the app load inside :func:`run`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from modulemesh.cli_types import positive_seconds

if TYPE_CHECKING:
    from modulemesh.sidecar.config import SidecarConfig

__all__ = ["build_config", "configure", "run"]

_PREFIX = "MODULEMESH_SIDECAR_"


def _env(flag: str, default: str | None) -> str | None:
    return os.environ.get(_PREFIX + flag.upper().replace("-", "_"), default)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sidecar's flags (defaults overridable by ``MODULEMESH_SIDECAR_*``)."""

    def add(flag: str, default: str | None, help_text: str, **kwargs: Any) -> None:
        env = _PREFIX + flag.upper().replace("-", "_")
        parser.add_argument(
            f"--{flag}", default=_env(flag, default), help=f"{help_text} [env {env}]", **kwargs
        )

    add("module", None, "module name (as in the ModuleGraph)")
    add(
        "upstream",
        "http://127.0.0.1:8081",
        "runtime base URL on loopback, or unix:/path of its socket",
    )
    add("host", "0.0.0.0", "listen address")
    add("port", "8080", "listen port", type=int)
    add("grpc-port", "0", "port of the guarded OIP v2 gRPC relay on --host; 0: none (module pods: 8082)", type=int)  # fmt: skip
    add("grpc-upstream", "127.0.0.1:8083", "the runtime's gRPC endpoint: host:port on loopback, or unix:/path")  # fmt: skip
    add("clearance", "", "comma-separated compliance tags this module may process")
    add("gates", None, "JSON object {name: PrivacyGate spec} of the gates whose header classifiers tag requests, as in the resolved graph")  # fmt: skip
    add("mode", "enforce", "enforce: deny uncleared requests; dryrun: only audit", choices=["enforce", "dryrun"])  # fmt: skip
    add("model-version", None, "model version from the spec (default: what the runtime reports)")
    add("window", "60", "rolling window of the health envelope, seconds", type=float)
    add("degraded-error-rate", "0.05", "error rate above which the module is Degraded", type=float)
    add("unhealthy-error-rate", "0.5", "error rate above which the module is Unhealthy", type=float)
    for pct in ("p50", "p95", "p99"):
        add(f"degraded-{pct}-ms", None, f"latency objective: {pct} latency (ms) of the window above which the module is Degraded", type=float)  # fmt: skip
    add("degraded-queue-depth", None, "runtime queue depth above which it is Degraded", type=int)
    add("confidence-output", None, "output whose row maximum is the confidence (default: any distribution)")  # fmt: skip
    add("confidence-max-bytes", "65536", "largest response body sampled for confidence", type=int)
    add("upstream-timeout", "30", "seconds before a runtime request times out (504)", type=float)
    add("body-timeout", "30", "seconds a client has to send a request body once its head is in, plus 1 s per 64 KiB; then 408", type=positive_seconds)  # fmt: skip
    add("poll-interval", "1", "seconds between runtime readiness/stats polls", type=float)
    add("envelope-refresh", "0.5", "oldest envelope put in response headers, seconds", type=float)
    add("log-level", "info", "log level of the sidecar's own messages")


def build_config(args: argparse.Namespace) -> SidecarConfig:
    """The :class:`~modulemesh.sidecar.config.SidecarConfig` for parsed arguments."""
    from modulemesh.headers import parse_tags
    from modulemesh.sidecar.config import (
        Mode,
        SidecarConfig,
        Thresholds,
        parse_grpc_upstream,
        parse_upstream,
    )

    if not args.module:
        raise ValueError("--module (or MODULEMESH_SIDECAR_MODULE) is required")
    gates = {}
    if args.gates:
        from modulemesh.api.resolved import parse_gates_json

        try:
            gates = parse_gates_json(args.gates)
        except ValueError as exc:
            raise ValueError(f"--gates (or MODULEMESH_SIDECAR_GATES): {exc}") from None
    objectives = {
        pct: None if ms is None else _objective(pct, ms)
        for pct, ms in (
            ("p50", args.degraded_p50_ms),
            ("p95", args.degraded_p95_ms),
            ("p99", args.degraded_p99_ms),
        )
    }
    depth = None if args.degraded_queue_depth is None else int(args.degraded_queue_depth)
    return SidecarConfig(
        module=args.module,
        upstream=parse_upstream(args.upstream),
        host=args.host,
        port=int(args.port),
        clearance=parse_tags(args.clearance),
        mode=Mode(args.mode),
        gates=gates,
        model_version=args.model_version or None,
        window_seconds=float(args.window),
        thresholds=Thresholds(
            degraded_error_rate=float(args.degraded_error_rate),
            unhealthy_error_rate=float(args.unhealthy_error_rate),
            degraded_p50_seconds=objectives["p50"],
            degraded_p95_seconds=objectives["p95"],
            degraded_p99_seconds=objectives["p99"],
            degraded_queue_depth=depth,
        ),
        confidence_output=args.confidence_output or None,
        confidence_max_bytes=int(args.confidence_max_bytes),
        upstream_timeout=float(args.upstream_timeout),
        body_timeout=float(args.body_timeout),
        poll_interval=float(args.poll_interval),
        envelope_refresh=float(args.envelope_refresh),
        grpc_port=int(args.grpc_port),
        grpc_upstream=parse_grpc_upstream(args.grpc_upstream),
    )


def _objective(percentile: str, ms: object) -> float:
    """A latency objective flag in seconds; refuses what is not a positive finite number."""
    try:
        value = float(str(ms))
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"--degraded-{percentile}-ms must be a positive number of ms, got {ms}")
    return value / 1000.0


def run(args: argparse.Namespace) -> int:
    """Serve the sidecar until interrupted; returns the exit code."""
    try:
        config = build_config(args)
    except ValueError as exc:
        print(f"modulemesh sidecar: {exc}", file=sys.stderr)
        return 2
    from modulemesh import audit, telemetry

    try:
        audit.configure_from_env()
    except ValueError as exc:
        print(f"modulemesh sidecar: audit records: {exc}", file=sys.stderr)
        return 2
    telemetry.setup_logging(args.log_level)
    from modulemesh.httpserver import ServerConfig, serve
    from modulemesh.sidecar.app import SidecarApp
    from modulemesh.sidecar.metrics import register_otel

    tel = telemetry.setup(f"modulemesh-sidecar-{config.module}", component="sidecar")
    app = SidecarApp(config, tracer=tel.tracer if tel.tracing else None)
    register_otel(tel.meter, app.health)
    server = ServerConfig(
        host=config.host, port=config.port, max_body=None, body_timeout=config.body_timeout
    )
    return serve(app, server, companions=app.grpc_companions())
