"""``modulemesh validate``: exit codes (0 ok / warnings, 1 spec errors or --strict warnings,
2 unreadable files), the ``error: FILE: PATH: message`` lines, ``ok:`` lines, gates from
``-f``, and the real console entry point run as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.graph_builders import gate, graph, module
from modulemesh import cli

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, *docs: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return str(path)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["validate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_valid_graph_prints_ok_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run([write(tmp_path / "g.yaml", graph())], capsys)
    assert code == 0
    assert out == "ok: ModuleGraph/g (2 modules, 1 node)\n"
    assert err == ""


def test_every_error_is_printed_with_file_and_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = graph()
    doc["spec"]["routing"]["entry"] = "mian"
    doc["spec"]["routing"]["nodes"][0]["steps"][1]["module"] = "clasifier"
    path = write(tmp_path / "g.yaml", doc)
    code, out, err = run([path], capsys)
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert (
        f"error: {path}: spec.routing.entry: entry node 'mian' does not exist; did you mean 'main'?"
        in lines
    )
    assert any(
        line.startswith(f"error: {path}: spec.routing.nodes[0].steps[1].module: module 'clasifier'")
        for line in lines
    )
    assert lines[-1].startswith("2 errors")


def test_schema_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = graph()
    doc["spec"]["modules"][0]["replica"] = 2
    path = write(tmp_path / "g.yaml", doc)
    code, _, err = run([path], capsys)
    assert code == 1
    assert f"error: {path}: spec.modules[0].replica: unknown field" in err


def test_warnings_pass_unless_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = graph(modules=[*graph()["spec"]["modules"], module("spare")])
    path = write(tmp_path / "g.yaml", doc)
    code, out, err = run([path], capsys)
    assert code == 0
    assert f"warning: {path}: spec.modules[2]: module 'spare'" in err
    assert "ok: ModuleGraph/g (3 modules, 1 node)" in out
    code, _, _ = run(["--strict", path], capsys)
    assert code == 1


def test_gates_from_f_files_are_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph_path = write(tmp_path / "g.yaml", graph(gates=["phi-gate"]))
    code, _, err = run([graph_path], capsys)
    assert code == 1
    assert f"error: {graph_path}: spec.gates[0]: PrivacyGate 'phi-gate' was not found" in err
    gate_path = write(tmp_path / "gate.yaml", gate("phi-gate", {"name": "phi"}))
    code, out, err = run([graph_path, "-f", gate_path], capsys)
    assert code == 1  # now the static privacy check applies: nothing is cleared for phi
    assert "non-compliant: module 'embedder' is not cleared for tag 'phi'" in err
    assert "ok: PrivacyGate/phi-gate (1 tag)" in out


def test_dryrun_gate_findings_are_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph_path = write(tmp_path / "g.yaml", graph(gates=["phi-gate"]))
    gate_path = write(tmp_path / "gate.yaml", gate("phi-gate", {"name": "phi"}, mode="dryrun"))
    code, out, err = run([graph_path, "-f", gate_path], capsys)
    assert code == 0
    assert "warning:" in err and "non-compliant" in err
    assert "ok: ModuleGraph/g" in out


def test_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "g.yaml", graph())
    missing = tmp_path / "missing.yaml"
    code, _, err = run([good, str(missing)], capsys)
    assert code == 2
    assert f"error: {missing}: cannot read file" in err


def test_file_without_documents_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    code, _, err = run([str(empty)], capsys)
    assert code == 1
    assert f"error: {empty}: no ModuleGraph or PrivacyGate documents found" in err


def subprocess_validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modulemesh", "validate", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_console_command_accepts_the_quickstart_example() -> None:
    result = subprocess_validate("examples/quickstart.yaml")
    assert result.returncode == 0, result.stderr
    assert "ok: ModuleGraph/quickstart" in result.stdout


def test_console_command_reports_errors_and_usage(tmp_path: Path) -> None:
    doc = graph()
    doc["spec"]["routing"]["nodes"][0]["type"] = "sequense"
    path = write(tmp_path / "bad.yaml", doc)
    result = subprocess_validate(path)
    assert result.returncode == 1
    assert f"error: {path}: spec.routing.nodes[0].type: unknown type 'sequense'" in result.stderr
    assert subprocess_validate().returncode == 2  # argparse: FILE is required
    assert subprocess_validate(str(tmp_path / "nope.yaml")).returncode == 2


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    # As a user types it: the graph file also given with -f/--gates, by other spellings.
    doc, phi = graph(gates=["phi-gate"]), gate("phi-gate", {"name": "phi"}, mode="dryrun")
    path = write(tmp_path / "g.yaml", doc, phi)
    (tmp_path / "link.yaml").symlink_to(path)
    result = subprocess_validate(
        path, "-f", f"{tmp_path}/./g.yaml", "--gates", str(tmp_path / "link.yaml")
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [
        "ok: ModuleGraph/g (2 modules, 1 node)", "ok: PrivacyGate/phi-gate (1 tag)"
    ]  # fmt: skip
