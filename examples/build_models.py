"""Build the ONNX models the example graphs reference.

    .venv/bin/python examples/build_models.py [--out examples/models]

The same as ``modulemesh models build examples/models``, which needs no path to this script
(``modulemesh run`` also builds the example models a graph is missing, and takes this file
next to ``models/`` as the sign that a directory holds the examples).

Deterministic: the same bytes on every run (see modulemesh.example_models). The models are
small enough to build in a second, so they are not checked in (examples/models/ is ignored).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modulemesh import example_models


def main(argv: list[str] | None = None) -> int:
    """Build every example model into ``--out``; prints each path written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "models",
        help="directory to write the .onnx files into (default: models/ next to this script)",
    )
    args = parser.parse_args(argv)
    for path in example_models.build(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
