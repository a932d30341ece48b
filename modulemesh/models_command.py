"""``modulemesh models build DIR``: write the example ONNX models the graphs in ``examples/`` use.

The build is part of the product (``modulemesh run`` does it for missing example models), so it
is a subcommand: it works from any install, an activated virtualenv or not, where a
``python examples/build_models.py`` hint would pick whatever ``python`` is first on PATH.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """``models`` has one action today, ``build``; more can join it as subcommands."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="build the example models into DIR",
        description="Write every example model (deterministic bytes; a file that already "
        "matches is left alone) into DIR and print each path.",
        formatter_class=parser.formatter_class,
    )
    build.add_argument(
        "dir", metavar="DIR", type=Path, help="directory to write into, e.g. examples/models"
    )


def run(args: argparse.Namespace) -> int:
    """Build, printing each path; a DIR that cannot be written is one line and exit code 1."""
    from modulemesh import example_models

    try:
        written = example_models.build(args.dir)
    except OSError as error:
        print(
            f"modulemesh models build: cannot write {error.filename or args.dir}: "
            f"{error.strerror or error}",
            file=sys.stderr,
        )
        return 1
    for path in written:
        print(path)
    return 0
