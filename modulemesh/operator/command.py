"""``modulemesh operator``: run the kopf operator (same as ``kopf run -m modulemesh.operator.handlers``).

Flags override the ``MODULEMESH_*`` environment the Helm chart sets; they are written back to
the environment before the handlers are imported, because kopf reads timer intervals then.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modulemesh.operator.config import OperatorSettings


def configure(parser: argparse.ArgumentParser) -> None:
    """Operator flags; each defaults to its ``MODULEMESH_*`` environment variable, then to the
    built-in default its help names (the same ``OperatorSettings`` the operator reads)."""
    from modulemesh.operator.config import OperatorSettings

    defaults = OperatorSettings()
    render = defaults.render

    def default(env: str, value: object) -> str:
        return f"(default: ${env}, else {value})"

    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="namespace to watch (repeatable) "
        "(default: $MODULEMESH_WATCH_NAMESPACES, comma-separated, else all namespaces)",
    )
    for flag, env, value, what in (
        ("gpu-resource", "MODULEMESH_GPU_RESOURCE", render.gpu_resource, "GPU extended resource name"),
        ("image-runtime", "MODULEMESH_IMAGE_RUNTIME", render.image_runtime, "runtime image for CPU modules"),
        ("image-runtime-gpu", "MODULEMESH_IMAGE_RUNTIME_GPU", render.image_runtime_gpu, "runtime image for GPU modules"),
        ("image-sidecar", "MODULEMESH_IMAGE_SIDECAR", render.image_sidecar, "image for the sidecar and the router"),
    ):  # fmt: skip
        parser.add_argument(f"--{flag}", help=f"{what} {default(env, value)}")
    parser.add_argument(
        "--envelope-interval",
        type=float,
        help="seconds between envelope reads "
        + default("MODULEMESH_ENVELOPE_INTERVAL", defaults.envelope_interval_s),
    )
    parser.add_argument(
        "--resync-interval",
        type=float,
        help="seconds between safety re-applies "
        + default("MODULEMESH_RESYNC_INTERVAL", defaults.resync_interval_s),
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "plain"],
        help="log format " + default("MODULEMESH_LOG_FORMAT", defaults.log_format),
    )
    parser.add_argument(
        "--liveness",
        help="liveness endpoint "
        + default("MODULEMESH_LIVENESS_ENDPOINT", defaults.liveness_endpoint),
    )
    parser.add_argument(
        "--webhook-port",
        type=int,
        help="serve the validating admission webhook on this port "
        "(default: $MODULEMESH_WEBHOOK_PORT, else no webhook)",
    )
    parser.add_argument(
        "--webhook-host",
        help="host the API server calls the webhook at, when not through a Service, e.g. "
        "127.0.0.1 for a local operator (default: $MODULEMESH_WEBHOOK_HOST, else the Service)",
    )
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig when not running in a cluster (default: $KUBECONFIG, else ~/.kube/config)",
    )
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

    with contextlib.suppress(asyncio.CancelledError):  # as kopf.run: a stop while starting
        asyncio.run(_operate(settings))
    return 0


RECONCILE_THREADS = 16
"""Threads for the reconciles' blocking API calls (``asyncio.to_thread``): the default of
CPUs + 4 (6 on two cores) kept most graphs of a large apply waiting for a thread while the
threads waited for the API server."""


async def _operate(settings: OperatorSettings) -> None:
    """kopf's operator (what ``kopf.run`` runs) on a loop with RECONCILE_THREADS threads."""
    import kopf

    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=RECONCILE_THREADS, thread_name_prefix="reconcile")
    )
    await kopf.operator(
        standalone=True,
        clusterwide=not settings.watch_namespaces,
        namespaces=settings.watch_namespaces,
        liveness_endpoint=settings.liveness_endpoint,
    )
