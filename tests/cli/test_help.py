"""Every ``modulemesh`` command's help, as a new user reads it: each option says what it does
and shows its real default (never "None"), and the gate files are spelled one way, ``-f/--gates``,
in every command that takes them."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from modulemesh.cli import SUBCOMMANDS, build_parser


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every (nested) subcommand parser by its full name, e.g. ``models build``."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in subparsers(sub).items()})
    return found


PARSERS = subparsers(build_parser())


def option_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text argparse prints for ``action``, on one line."""
    formatter = parser._get_formatter()
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


def test_every_subcommand_is_covered() -> None:
    assert set(SUBCOMMANDS) | {"models build"} <= set(PARSERS)


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_option_says_what_it_does_and_shows_its_default(command: str) -> None:
    parser = PARSERS[command]
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        text = option_help(parser, action)
        flag = action.option_strings[-1]
        assert action.help, f"{command} {flag} has no help"
        assert "None" not in text, f"{command} {flag}: {text}"
        default = action.default
        if default not in (None, False, [], argparse.SUPPRESS):
            assert f"(default: {default})" in text or "default" in action.help, (
                f"{command} {flag} hides its default {default!r}: {text}"
            )


@pytest.mark.parametrize("command", ["validate", "render", "run"])
def test_gate_files_have_one_spelling(command: str) -> None:
    parser = PARSERS[command]
    (gates,) = [a for a in parser._actions if a.dest == "gates"]
    assert gates.option_strings == ["-f", "--gates"]
    spellings = {s for a in parser._actions for s in a.option_strings}
    assert "--file" not in spellings
    args = parser.parse_args(["g.yaml", "-f", "a.yaml", "--gates", "b.yaml"])
    assert args.gates == ["a.yaml", "b.yaml"]
    # One file per flag: a flag before the graph does not swallow it.
    args = parser.parse_args(["-f", "a.yaml", "g.yaml"])
    assert args.gates == ["a.yaml"]
    assert (args.files if command == "validate" else [args.graph]) == ["g.yaml"]


def test_run_help_shows_the_port_and_render_the_router_image_default() -> None:
    def help_of(command: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "modulemesh", command, "--help"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return " ".join(done.stdout.split())

    assert "router port on 127.0.0.1 (0: any free port) (default: 8080)" in help_of("run")
    render = help_of("render")
    assert "router image (default: the sidecar image)" in render
    assert "(default None)" not in render and "(default: None)" not in render
    assert "--gates GATES.yaml" in render
