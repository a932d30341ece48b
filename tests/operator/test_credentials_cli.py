"""``modulemesh operator`` and ``modulemesh status`` without usable Kubernetes credentials: one
line on stderr naming what was tried (in-cluster, then the kubeconfig path) and exit code 2,
never kopf's JSON log lines or a traceback. Run as the user runs them: a subprocess with an
empty HOME and no service-account environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = [["operator"], ["status"]]


def run(args: list[str], home: Path, kubeconfig: str | None) -> subprocess.CompletedProcess[str]:
    """``python -m modulemesh ARGS`` outside any cluster, bounded in time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "MODULEMESH_"))}
    env["HOME"] = str(home)
    if kubeconfig is not None:
        env["KUBECONFIG"] = kubeconfig
    return subprocess.run(
        [sys.executable, "-m", "modulemesh", *args],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip


def assert_one_line(done: subprocess.CompletedProcess[str], command: str, *names: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"modulemesh {command}: no usable Kubernetes credentials: ")
    assert "not in a cluster (KUBERNETES_SERVICE_HOST is not set)" in lines[0]
    for name in names:
        assert name in lines[0], lines[0]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_kubeconfig_env_pointing_nowhere_is_one_line(tmp_path: Path, args: list[str]) -> None:
    nowhere = tmp_path / "nowhere" / "config"
    done = run(args, tmp_path, str(nowhere))
    assert_one_line(done, args[0], f"kubeconfig {nowhere}: no such file")


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_no_kubeconfig_at_all_names_the_default_path(tmp_path: Path, args: list[str]) -> None:
    done = run(args, tmp_path, None)
    assert_one_line(done, args[0], "kubeconfig ~/.kube/config: no such file")


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_unreadable_kubeconfig_flag_names_file_and_problem(tmp_path: Path, args: list[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("clusters: [\n")
    done = run([*args, "--kubeconfig", str(broken)], tmp_path, None)
    assert_one_line(done, args[0], f"kubeconfig {broken}: ", "while parsing")
