"""``modulemesh run graph.yaml [-f gates.yaml ...]``: the embedded default, one graph on a laptop.

Validates the graph first (every error, then refuses), builds missing example models,
starts a runtime and a sidecar per module and the router, prints a table and the endpoint,
streams prefixed logs and, on Ctrl-C or SIGTERM, stops every child.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``run``'s arguments."""
    from modulemesh.api.commands import add_gate_files

    parser.add_argument("graph", help="YAML file with one ModuleGraph (may also hold PrivacyGates)")
    add_gate_files(parser)
    parser.add_argument("--port", type=int, default=8080, help="router port on 127.0.0.1 (0: any free port)")  # fmt: skip
    parser.add_argument("--ready-timeout", type=float, default=90.0, help="seconds to wait for readiness")  # fmt: skip
    parser.add_argument("--log-dir", type=Path, default=None, help="also write each process's log here")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="do not stream child logs to the terminal")  # fmt: skip
    parser.add_argument("--no-build", action="store_true", help="do not build missing example models")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run the mesh until interrupted; returns the exit code."""
    from modulemesh.localmesh.runner import run_mesh

    return run_mesh(
        Path(args.graph),
        [Path(f) for f in args.gates],
        port=args.port,
        ready_timeout=args.ready_timeout,
        log_dir=args.log_dir,
        echo=None if args.quiet else sys.stderr,
        build=not args.no_build,
    )
