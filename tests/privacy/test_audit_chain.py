"""The audit log's hash chain and MAC: an untouched log verifies, and ``modulemesh audit
verify`` names the first record removed, altered or reordered, per process chain, with the
key or without one. Records are written by the real :func:`modulemesh.audit.emit` into a file,
as the router and sidecar write them; the command runs as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modulemesh import audit
from modulemesh.api.graph import ModuleGraph
from modulemesh.api.resolved import resolve
from modulemesh.audit import Chain, Decision

KEY = b"test-audit-key-0123456789"


def write_log(path: Path, count: int, key: bytes | None = KEY) -> list[str]:
    """``count`` records from one chain into ``path``; returns the lines."""
    audit.configure(Chain(key, path))
    try:
        for n in range(count):
            audit.emit(component="router", module=f"m{n}", tags=["pii"], decision=Decision.DENY,
                       reason=f"reason {n}", trace_id="ab" * 16, graph="g", gate="gate",
                       detectors=["email"])  # fmt: skip
    finally:
        audit.configure(None)
    return path.read_text().splitlines()


def check(*files: Path, key: bytes | None = KEY, tmp: Path | None = None) -> tuple[int, str]:
    """Run ``modulemesh audit verify``; returns exit code and output."""
    args = [sys.executable, "-m", "modulemesh", "audit", "verify", *map(str, files)]
    if key is not None:
        assert tmp is not None
        key_file = tmp / "key"
        key_file.write_bytes(key + b"\n")
        args += ["--key-file", str(key_file)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def log(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    path = tmp_path / "audit.jsonl"
    yield path, write_log(path, 6)


def verify(path: Path, key: bytes | None = KEY) -> list[str]:
    return audit.verify(audit.read_records([path]), key)


class TestRecords:
    def test_fields_and_no_payload(self, log: tuple[Path, list[str]]) -> None:
        _, lines = log
        record = json.loads(lines[0])
        assert record["seq"] == 0 and record["prev"] == "0" * 64 and len(record["mac"]) == 64
        for field in ("time", "traceId", "graph", "module", "gate", "tags", "detectors",
                      "decision", "reason", "chain"):  # fmt: skip
            assert field in record
        assert json.loads(lines[1])["prev"] != "0" * 64

    def test_without_key_only_the_chain(self, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        lines = write_log(path, 3, key=None)
        assert json.loads(lines[0])["mac"] is None
        assert verify(path, key=None) == []
        assert "no MAC" in verify(path)[0]


class TestVerify:
    def test_untouched_log_passes(self, log: tuple[Path, list[str]], tmp_path: Path) -> None:
        path, _ = log
        code, out = check(path, tmp=tmp_path)
        assert code == 0, out
        assert out.startswith("ok: 6 records in 1 chain")

    @pytest.mark.parametrize("index", [0, 2, 5])
    def test_deleted_line(self, log: tuple[Path, list[str]], tmp_path: Path, index: int) -> None:
        path, lines = log
        path.write_text("\n".join(lines[:index] + lines[index + 1 :]) + "\n")
        code, out = check(path, tmp=tmp_path)
        if index == 5:
            # The last record: nothing follows it to show the gap (documented limit).
            assert code == 0, out
            return
        assert code == 1, out
        assert f"{path}:{index + 1}: record {index + 1} " in out
        assert f"removed: record {index} of chain" in out

    @pytest.mark.parametrize("index", [0, 3, 5])
    def test_edited_line(self, log: tuple[Path, list[str]], tmp_path: Path, index: int) -> None:
        path, lines = log
        lines[index] = lines[index].replace(f"reason {index}", "nothing to see")
        path.write_text("\n".join(lines) + "\n")
        code, out = check(path, tmp=tmp_path)
        assert code == 1, out
        assert f"{path}:{index + 1}: record {index} " in out and "altered" in out

    def test_edited_line_rehashed_without_key_is_caught_by_the_next(self, tmp_path: Path) -> None:
        """Without a key an editor can fix the edited record's own fields, but not the
        ``prev`` of the record after it without rewriting that one too."""
        path = tmp_path / "a.jsonl"
        lines = write_log(path, 4, key=None)
        record = json.loads(lines[1])
        record["decision"] = "allow"
        lines[1] = json.dumps(record, separators=(",", ":"))
        path.write_text("\n".join(lines) + "\n")
        assert verify(path, key=None)[0].startswith(f"{path}:3: record 2 ")

    def test_swapped_lines(self, log: tuple[Path, list[str]], tmp_path: Path) -> None:
        path, lines = log
        lines[2], lines[3] = lines[3], lines[2]
        path.write_text("\n".join(lines) + "\n")
        code, out = check(path, tmp=tmp_path)
        assert code == 1, out
        assert f"{path}:3: record 3 " in out and "reordered: record 2" in out

    def test_wrong_key(self, log: tuple[Path, list[str]], tmp_path: Path) -> None:
        path, _ = log
        code, out = check(path, key=b"another key", tmp=tmp_path)
        assert code == 1 and f"{path}:1: record 0 " in out and "MAC does not match" in out

    def test_mac_without_key_is_refused(self, log: tuple[Path, list[str]]) -> None:
        path, _ = log
        code, out = check(path, key=None)
        assert code == 1 and "no key was given" in out

    def test_garbled_line(self, log: tuple[Path, list[str]], tmp_path: Path) -> None:
        path, lines = log
        lines[1] = lines[1][:40]
        path.write_text("\n".join(lines) + "\n")
        code, out = check(path, tmp=tmp_path)
        assert code == 1 and f"{path}:2:" in out and "altered" in out

    def test_interleaved_chains_and_other_lines(self, tmp_path: Path) -> None:
        """Two processes appending to one file, plus ordinary log lines: each chain checks
        on its own."""
        first = write_log(tmp_path / "a.jsonl", 3)
        second = write_log(tmp_path / "b.jsonl", 3)
        mixed = [first[0], second[0], "2026-01-01 INFO other: hello", first[1], second[1],
                 second[2], first[2]]  # fmt: skip
        path = tmp_path / "mixed.log"
        path.write_text("\n".join(mixed) + "\n")
        assert verify(path) == []
        del mixed[4]  # second's record 1
        path.write_text("\n".join(mixed) + "\n")
        problems = verify(path)
        assert len(problems) == 1 and "removed: record 1" in problems[0]

    def test_unreadable_file_is_exit_2(self, tmp_path: Path) -> None:
        code, out = check(tmp_path / "missing.jsonl", tmp=tmp_path)
        assert code == 2 and "missing.jsonl" in out


def make_graph(name: str, modules: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> Any:
    return ModuleGraph.model_validate(
        {"apiVersion": "modulemesh.io/v1alpha1", "kind": "ModuleGraph", "metadata": {"name": name},
         "spec": {"modules": modules, "routing": {"entry": "main", "nodes": nodes}}}
    )  # fmt: skip


class TestStartup:
    """An unusable key or log file stops the router and the sidecar at start, naming the
    variable and file, rather than failing the first request that needs a record."""

    @pytest.mark.parametrize("component", ["router", "sidecar"])
    @pytest.mark.parametrize(
        ("variable", "problem"),
        [
            ("MODULEMESH_AUDIT_KEY_FILE", "missing"),
            ("MODULEMESH_AUDIT_KEY_FILE", "empty"),
            ("MODULEMESH_AUDIT_LOG", "missing"),
        ],
    )
    def test_exits_2_naming_the_variable(
        self, tmp_path: Path, component: str, variable: str, problem: str
    ) -> None:
        path = tmp_path / "no-such-dir" / "file"
        if problem == "empty":
            path = tmp_path / "empty-key"
            path.write_text("\n")
        if component == "router":
            graph = make_graph("g", [{"name": "m", "model": {"path": "m.onnx"}}],
                               [{"name": "main", "type": "sequence", "steps": [{"module": "m"}]}])  # fmt: skip
            config = tmp_path / "resolved.json"
            config.write_text(resolve(graph, [], {"m": "http://127.0.0.1:9"}).dumps())
            args = ["router", "--config", str(config), "--host", "127.0.0.1", "--port", "0"]
        else:
            args = ["sidecar", "--module", "m", "--upstream", "http://127.0.0.1:9",
                    "--host", "127.0.0.1", "--port", "0"]  # fmt: skip
        env = {**os.environ, variable: str(path)}
        done = subprocess.run([sys.executable, "-m", "modulemesh", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"{variable}={path}" in done.stderr, done.stderr
