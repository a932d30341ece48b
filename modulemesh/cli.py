"""The ``modulemesh`` command.

Each subcommand lives with its component in a module exposing ``configure(parser)`` and
``run(args) -> int``. Command modules import only light things at module level, so building
the parser (and ``modulemesh --help``) does not load onnxruntime or kopf.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from modulemesh import __version__

#: subcommand -> (command module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "runtime": (
        "modulemesh.runtime.command",
        "Serve one ONNX model over the Open Inference Protocol v2.",
    ),
    "validate": (
        "modulemesh.api.commands",
        "Check ModuleGraph and PrivacyGate files; print every problem.",
    ),
    "render": (
        "modulemesh.operator.render_command",
        "Print the Kubernetes objects a ModuleGraph becomes.",
    ),
    "sidecar": ("modulemesh.sidecar.command", "Guard one module and publish its health envelope."),
    "router": (
        "modulemesh.router.command",
        "Run one graph's router (serves the graph as a v2 model).",
    ),
    "run": (
        "modulemesh.localmesh.command",
        "Run a ModuleGraph locally: runtimes, sidecars, router.",
    ),
    "infer": ("modulemesh.router.infer_command", "Send one inference request to a graph's router."),
    "models": ("modulemesh.models_command", "Build the example ONNX models the examples use."),
    "operator": ("modulemesh.operator.command", "Run the Kubernetes operator (kopf)."),
    "status": (
        "modulemesh.operator.status_command",
        "Show ModuleGraphs and per-module state from a cluster.",
    ),
    "rollback": (
        "modulemesh.operator.rollback_command",
        "Return a ModuleGraph to a spec from its revision history.",
    ),
    "audit": (
        "modulemesh.audit_command",
        "Check privacy audit logs (modulemesh audit verify FILE...).",
    ),
    "replay": (
        "modulemesh.rollout.replay_command",
        "Replay captured requests against a graph; report how its answers differ.",
    ),
    "webhook-configuration": (
        "modulemesh.operator.webhook_command",
        "Print the admission webhook's configuration for an operator outside the cluster.",
    ),
}


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its real default, so no command hides one.

    Added only when the help does not already say it (``default`` in the text) and there is a
    value worth showing: not None (the help says what happens then), not a switch's False and
    not an empty repeatable list.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or re.search(r"\bdefault", text)
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or default == []
        ):
            return action.help
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def invocation() -> str:
    """How this process was started as the ``modulemesh`` command, ready to paste into a shell:
    hints then name a command that works where the user is (``.venv/bin/modulemesh`` from a
    virtualenv that is not activated, ``python -m modulemesh`` when run that way)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "modulemesh":
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m modulemesh"


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with one subparser per registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="modulemesh",
        formatter_class=HelpFormatter,
        description="Run model-module meshes: ONNX submodules, routing policies, privacy gates.",
    )
    parser.add_argument("--version", action="version", version=f"modulemesh {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        module.configure(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    code: int = run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
