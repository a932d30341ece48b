"""``modulemesh router --config resolved.json --port P``: run one graph's router.

Only light imports here; the server, numpy and the app load inside :func:`run`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from modulemesh.cli_types import positive_seconds

if TYPE_CHECKING:
    from modulemesh.privacy.ledger import Ledger

__all__ = ["configure", "open_ledger", "run"]

_PREFIX = "MODULEMESH_ROUTER_"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the router's flags (defaults overridable by ``MODULEMESH_ROUTER_*``)."""
    env = os.environ.get
    parser.add_argument("--config", default=env(_PREFIX + "CONFIG"),
                        help=f"resolved graph JSON (as written by the operator or `modulemesh run`) [env {_PREFIX}CONFIG]")  # fmt: skip
    parser.add_argument("--host", default=env(_PREFIX + "HOST", "0.0.0.0"), help="listen address")
    parser.add_argument(
        "--port", type=int, default=int(env(_PREFIX + "PORT", "8080")), help="listen port"
    )
    parser.add_argument(
        "--grpc-port", type=int, default=int(env(_PREFIX + "GRPC_PORT", "0")),
        help="port of the OIP v2 gRPC endpoint (inference.GRPCInferenceService) on --host; "
        f"0: none (in a cluster 8081, the protocol's convention) [env {_PREFIX}GRPC_PORT]",
    )  # fmt: skip
    parser.add_argument("--poll-interval", type=float, default=float(env(_PREFIX + "POLL_INTERVAL", "2")),
                        help="seconds of silence after which a module's /envelope is polled")  # fmt: skip
    parser.add_argument("--body-timeout", type=positive_seconds, default=env(_PREFIX + "BODY_TIMEOUT", "30"),
                        help="seconds a client has to send a request body once its head is in, plus 1 s per "
                             f"64 KiB received; then 408 and the connection closes [env {_PREFIX}BODY_TIMEOUT]")  # fmt: skip
    parser.add_argument("--dp-ledger", default=env(_PREFIX + "DP_LEDGER"), metavar="FILE|configmap:NS/NAME",
                        help="privacy budget ledger every replica of the router shares: a JSON file "
                             "(locked per charge) or a ConfigMap (written with resourceVersion "
                             "compare-and-swap); needed when a gate declares differentialPrivacy "
                             f"[env {_PREFIX}DP_LEDGER] (default: none)")  # fmt: skip
    parser.add_argument("--rollout-state", default=env(_PREFIX + "ROLLOUT_STATE"), metavar="FILE",
                        help="file where each canary rollout's step is kept, so a restarted router "
                             "resumes it there instead of at step 1 (written at each step; "
                             f"modulemesh run passes one) [env {_PREFIX}ROLLOUT_STATE] (default: none)")  # fmt: skip
    parser.add_argument("--log-level", default=env(_PREFIX + "LOG_LEVEL", "info"), help="log level")


def run(args: argparse.Namespace) -> int:
    """Load the resolved graph and serve it until interrupted."""
    if not args.config:
        print(
            "modulemesh router: --config (or MODULEMESH_ROUTER_CONFIG) is required", file=sys.stderr
        )
        return 2
    from pydantic import ValidationError

    from modulemesh.api.resolved import ResolvedGraph
    from modulemesh.cel import CelError

    try:
        resolved = ResolvedGraph.load(args.config)
    except OSError as exc:
        print(f"modulemesh router: cannot read {args.config}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"modulemesh router: {args.config} is not a resolved graph:\n{exc}", file=sys.stderr)
        return 2
    from modulemesh import audit, telemetry

    try:
        audit.configure_from_env()
    except ValueError as exc:
        print(f"modulemesh router: audit records: {exc}", file=sys.stderr)
        return 2
    telemetry.setup_logging(args.log_level)
    from modulemesh.httpserver import ServerConfig, serve
    from modulemesh.privacy.ledger import LedgerError
    from modulemesh.router.app import MAX_BODY, RouterApp
    from modulemesh.router.metrics import register_otel

    ledger = None
    if args.dp_ledger:
        try:
            ledger = open_ledger(args.dp_ledger)
        except LedgerError as exc:
            print(f"modulemesh router: --dp-ledger: {exc}", file=sys.stderr)
            return 2
    tel = telemetry.setup(f"modulemesh-router-{resolved.name}", component="router")
    try:
        app = RouterApp(
            resolved, tracer=tel.tracer if tel.tracing else None,
            poll_interval=args.poll_interval, ledger=ledger,
            rollout_state=Path(args.rollout_state) if args.rollout_state else None,
        )  # fmt: skip
    except (ValueError, CelError) as exc:
        print(f"modulemesh router: graph {resolved.name!r}: {exc}", file=sys.stderr)
        return 2
    register_otel(tel.meter, app.metrics, record_latency=tel.metrics_exported)
    config = ServerConfig(
        host=args.host, port=args.port, max_body=MAX_BODY, body_timeout=args.body_timeout
    )
    companions = []
    if args.grpc_port:
        from modulemesh.grpc.server import GrpcServer, OipService, listen_address

        # Answered by the same app as HTTP: one inference path, the same gates and limits.
        address = listen_address(args.host, args.grpc_port)
        companions.append(
            GrpcServer([OipService(app).handler()], address, max_message_bytes=MAX_BODY)
        )
    return serve(app, config, companions=companions)


def open_ledger(spec: str) -> Ledger:
    """The ledger a ``--dp-ledger`` value names: ``configmap:NAMESPACE/NAME`` (the API server
    from the pod's service account, else ``$KUBECONFIG``) or a file path; raises
    :class:`~modulemesh.privacy.ledger.LedgerError`."""
    from modulemesh.privacy.ledger import LedgerError

    if spec.startswith("configmap:"):
        namespace, sep, name = spec[len("configmap:") :].partition("/")
        if not sep or not namespace or not name:
            raise LedgerError(f"{spec!r}: write configmap:NAMESPACE/NAME")
        from modulemesh.operator.kube import KubeConfigError, load_config
        from modulemesh.privacy.ledger import ConfigMapLedger

        try:
            api = load_config()
        except KubeConfigError as exc:
            raise LedgerError(f"{spec}: {exc}") from exc
        return ConfigMapLedger(api, namespace, name)
    from modulemesh.privacy.ledger import FileLedger

    return FileLedger(spec)
