"""``modulemesh operator``: run the kopf operator (same as ``kopf run -m modulemesh.operator.handlers``).

Flags override the ``MODULEMESH_*`` environment the Helm chart sets; they are written back to
the environment before the handlers are imported, because kopf reads timer intervals then.
"""

from __future__ import annotations

import argparse
import os
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    """Operator flags; each defaults to its ``MODULEMESH_*`` environment variable."""
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="namespace to watch (repeatable); all namespaces when none is given "
        "(env MODULEMESH_WATCH_NAMESPACES, comma-separated)",
    )
    parser.add_argument(
        "--gpu-resource", help="GPU extended resource name (MODULEMESH_GPU_RESOURCE)"
    )
    parser.add_argument("--image-runtime", help="runtime image for CPU modules")
    parser.add_argument("--image-runtime-gpu", help="runtime image for GPU modules")
    parser.add_argument("--image-sidecar", help="image for the sidecar and the router")
    parser.add_argument(
        "--envelope-interval", type=float, help="seconds between envelope reads (default 15)"
    )
    parser.add_argument(
        "--resync-interval", type=float, help="seconds between safety re-applies (default 300)"
    )
    parser.add_argument("--log-format", choices=["json", "plain"], help="log format (default json)")
    parser.add_argument(
        "--liveness", help="liveness endpoint (default http://0.0.0.0:8080/healthz)"
    )
    parser.add_argument(
        "--webhook-port",
        type=int,
        help="serve the validating admission webhook on this port (MODULEMESH_WEBHOOK_PORT)",
    )
    parser.add_argument(
        "--webhook-host",
        help="host the API server calls the webhook at, when not through a Service "
        "(MODULEMESH_WEBHOOK_HOST, e.g. 127.0.0.1 for a local operator)",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig when not running in a cluster")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


_ENV = {
    "gpu_resource": "MODULEMESH_GPU_RESOURCE",
    "image_runtime": "MODULEMESH_IMAGE_RUNTIME",
    "image_runtime_gpu": "MODULEMESH_IMAGE_RUNTIME_GPU",
    "image_sidecar": "MODULEMESH_IMAGE_SIDECAR",
    "envelope_interval": "MODULEMESH_ENVELOPE_INTERVAL",
    "resync_interval": "MODULEMESH_RESYNC_INTERVAL",
    "log_format": "MODULEMESH_LOG_FORMAT",
    "liveness": "MODULEMESH_LIVENESS_ENDPOINT",
    "webhook_port": "MODULEMESH_WEBHOOK_PORT",
    "webhook_host": "MODULEMESH_WEBHOOK_HOST",
    "kubeconfig": "KUBECONFIG",
}


def run(args: argparse.Namespace) -> int:
    """Start the operator; returns when kopf stops (SIGTERM/SIGINT)."""
    if args.namespaces:
        os.environ["MODULEMESH_WATCH_NAMESPACES"] = ",".join(args.namespaces)
    for attr, env in _ENV.items():
        value = getattr(args, attr)
        if value is not None:
            os.environ[env] = str(value)

    import kopf

    from modulemesh.operator.config import OperatorSettings

    try:
        settings = OperatorSettings.from_env()
    except ValueError as error:
        print(f"modulemesh operator: {error}", file=sys.stderr)
        return 2
    # kopf would retry a missing login forever in JSON log lines and end in a LoginError
    # traceback; the same loader the handlers use says what is missing in one line.
    from modulemesh.operator.kube import KubeConfigError, load_config

    try:
        load_config(settings.kubeconfig)
    except KubeConfigError as error:
        print(f"modulemesh operator: {error}", file=sys.stderr)
        return 2
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    import modulemesh.operator.handlers  # noqa: F401  (registers the handlers)

    kopf.run(
        standalone=True,
        clusterwide=not settings.watch_namespaces,
        namespaces=settings.watch_namespaces,
        liveness_endpoint=settings.liveness_endpoint,
    )
    return 0
