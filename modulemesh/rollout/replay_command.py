"""``modulemesh replay CAPTURE --to URL``: send a capture's requests to a graph and report how
its answers differ, per module and output (see :mod:`modulemesh.rollout.replay`). Exit 0 when
every request was answered, 1 when some failed, 2 when the capture cannot be read; with
``--max-error`` also 1 when an output differs by more."""

from __future__ import annotations

import argparse
import json
import math
import sys

from modulemesh.cli_types import positive_seconds


def non_negative(text: str) -> float:
    """A tolerance flag: a finite number of at least 0, else a clear argparse error."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of at least 0, got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``replay``."""
    parser.add_argument(
        "capture", metavar="CAPTURE", help="capture file (spec.capture's JSON lines)"
    )
    parser.add_argument("--to", required=True, metavar="URL",
                        help="the graph's infer URL, http://HOST:PORT/v2/models/GRAPH/infer")  # fmt: skip
    parser.add_argument("--atol", type=non_negative, default=1e-6,
                        help="largest difference that agrees, for outputs of one value per row "
                             "(others agree when each row's argmax is the same)")  # fmt: skip
    parser.add_argument("--max-error", type=non_negative, default=None,
                        help="exit 1 when an output's max abs error is above this (default: none)")  # fmt: skip
    parser.add_argument("--timeout", type=positive_seconds, default=30.0,
                        help="seconds per request")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Replay and print the report."""
    from modulemesh.rollout.replay import CaptureError, replay

    try:
        report = replay(args.capture, args.to, atol=args.atol, timeout=args.timeout)
    except CaptureError as exc:
        print(f"modulemesh replay: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    too_far = args.max_error is not None and any(
        d.max_abs_error > args.max_error for d in report.outputs.values()
    )
    return 1 if report.failed or too_far else 0
