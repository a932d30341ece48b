"""``modulemesh validate FILE... [-f GATES...]``: check graphs and gates, print every problem.

Exit codes: 0 when there is no error (warnings allowed unless ``--strict``), 1 when a spec
has errors, 2 when a file cannot be read. Problems go to stderr as
``error: FILE: FIELD.PATH: message``; valid documents get an ``ok:`` line on stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modulemesh.api.errors import Issue, Severity
from modulemesh.api.gate import PrivacyGate
from modulemesh.api.graph import ModuleGraph
from modulemesh.api.loader import Documents, load_text, unique_files
from modulemesh.api.validation import document_reports, duplicate_documents

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def add_gate_files(parser: argparse.ArgumentParser) -> None:
    """``-f/--gates GATES.yaml``: the one spelling of "a file with the PrivacyGates the graph
    names" in ``validate``, ``render`` and ``run``. One file per flag, repeatable, as with
    ``kubectl apply -f``, so ``-f gates.yaml graph.yaml`` cannot swallow the graph; a file
    also given elsewhere on the command line is read once."""
    parser.add_argument(
        "-f",
        "--gates",
        action="append",
        default=[],
        metavar="GATES.yaml",
        help="a file with PrivacyGates the graph names (repeatable: -f a.yaml -f b.yaml)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``modulemesh validate``."""
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="YAML files with ModuleGraph/PrivacyGate documents"
    )
    add_gate_files(parser)
    parser.add_argument("--strict", action="store_true", help="treat warnings as failures (exit 1)")


def run(args: argparse.Namespace) -> int:
    """Load every document of every file, validate them, print the result."""
    docs = Documents()
    unreadable = False
    for path in unique_files([*args.files, *args.gates]):
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            print(f"error: {path}: cannot read file: {reason}", file=sys.stderr)
            unreadable = True
            continue
        loaded = load_text(text, str(path))
        if not loaded.graphs and not loaded.gates and not loaded.issues:
            loaded.issues.append(Issue(str(path), "no ModuleGraph or PrivacyGate documents found"))
        docs.graphs += loaded.graphs
        docs.gates += loaded.gates
        docs.issues += loaded.issues
        docs.sources.update(loaded.sources)
    if unreadable:
        return EXIT_USAGE

    issues = [*docs.issues, *duplicate_documents(docs)]
    ok_lines: list[str] = []
    for report in document_reports(docs):
        issues += report.issues
        if report.ok:
            ok_lines.append(_ok_line(report.document))
    for issue in issues:
        print(issue, file=sys.stderr)
    for line in ok_lines:
        print(line)

    errors = sum(1 for i in issues if i.severity is Severity.ERROR)
    warnings = len(issues) - errors
    if issues:
        print(f"{_count(errors, 'error')}, {_count(warnings, 'warning')}", file=sys.stderr)
    if errors or (args.strict and warnings):
        return EXIT_INVALID
    return EXIT_OK


def _ok_line(document: ModuleGraph | PrivacyGate) -> str:
    if isinstance(document, ModuleGraph):
        spec = document.spec
        return (
            f"ok: ModuleGraph/{document.metadata.name} "
            f"({_count(len(spec.modules), 'module')}, {_count(len(spec.routing.nodes), 'node')})"
        )
    return f"ok: PrivacyGate/{document.metadata.name} ({_count(len(document.spec.tags), 'tag')})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
