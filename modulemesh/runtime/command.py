"""``modulemesh runtime``: serve one ONNX model over the Open Inference Protocol v2.

Only light imports here; onnxruntime and the server load inside :func:`run`.
"""

from __future__ import annotations

import argparse
import asyncio

from modulemesh.runtime.config import add_arguments, from_args


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the runtime's flags (each also readable from ``MODULEMESH_RUNTIME_*``)."""
    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Start the runtime; returns 0 after a graceful drain."""
    config = from_args(args)
    from modulemesh.telemetry import setup_logging

    setup_logging(config.log_level)
    from modulemesh.runtime.server import serve

    try:
        import uvloop

        runner: asyncio.Runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.Runner()
    with runner:
        return runner.run(serve(config))
