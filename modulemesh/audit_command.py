"""``modulemesh audit verify FILE...``: check audit logs for removed, altered or reordered
records (see :mod:`modulemesh.audit`). Exit 0 when every chain is intact, 1 naming the first
bad record of each broken chain, 2 when a file or the key cannot be read."""

from __future__ import annotations

import argparse
import os
import sys

from modulemesh import audit


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``verify`` under ``audit``."""
    actions = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = actions.add_parser(
        "verify",
        help="Check audit logs: hash chains and MACs.",
        description="Check audit logs (JSON lines; other lines are skipped): every record's "
        "MAC, sequence and link to the record before it, per process chain. Names the first "
        "removed, altered or reordered record. Records cut off the end of a log cannot be "
        "detected by the chain.",
        formatter_class=parser.formatter_class,
    )
    verify.add_argument("files", nargs="+", metavar="FILE", help="audit logs, oldest first")
    verify.add_argument(
        "--key-file",
        default=os.environ.get(audit.KEY_FILE_ENV),
        help=f"file holding the MAC key (default: ${audit.KEY_FILE_ENV}); without one, only "
        "logs written without a key verify",
    )


def run(args: argparse.Namespace) -> int:
    """Verify and print the outcome."""
    try:
        key = audit.read_key(args.key_file) if args.key_file else None
        records = audit.read_records(args.files)
    except (OSError, ValueError) as exc:
        print(f"modulemesh audit verify: {exc}", file=sys.stderr)
        return 2
    problems = audit.verify(records, key)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    chains = len({r.record["chain"] for r in records if r.record is not None})
    how = "hash chains and MACs" if key is not None else "hash chains only, no key"
    print(f"ok: {len(records)} records in {chains} chain{'s' if chains != 1 else ''} ({how})")
    return 0
