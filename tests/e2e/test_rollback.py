"""A graph's revision history and `modulemesh rollback` on the real control plane (issue 16,
point 3): the operator records each generation's spec in status.revisions with its outcome;
`modulemesh rollback GRAPH -n NS` writes the previous revision's spec back (a new generation,
recorded as a new revision), `--to-revision N` a named one, and a revision that is not kept is
refused with a message naming the kept ones, the graph untouched."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from e2e.cluster import Cluster, wait_until
from e2e.operator_process import OperatorProcess


def _graph(version: str) -> dict[str, Any]:
    return {
        "apiVersion": "modulemesh.io/v1alpha1", "kind": "ModuleGraph",
        "metadata": {"name": "rb"},
        "spec": {"modules": [{"name": "clf", "model": {"path": f"/models/v{version}.onnx"},
                              "version": version}],
                 "routing": {"entry": "main", "nodes": [
                     {"name": "main", "type": "sequence", "steps": [{"module": "clf"}]}]}},
    }  # fmt: skip


def _rollback(cluster: Cluster, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "modulemesh", "rollback", "rb", "-n", namespace]
    command += ["--kubeconfig", str(cluster.kubeconfig), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_rollback_returns_to_a_kept_revision(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    def graph() -> dict[str, Any]:
        found: dict[str, Any] = cluster.kubectl_json("-n", namespace, "get", "modulegraph", "rb")
        return found

    def revision(number: int, outcome: str | None = None) -> dict[str, Any] | None:
        current = graph()
        for r in (current.get("status") or {}).get("revisions") or []:
            if r["revision"] == number and outcome in (None, r["outcome"]):
                return current
        return None

    def wait_revision(number: int, outcome: str | None = None) -> dict[str, Any]:
        try:
            found: dict[str, Any] = wait_until(
                lambda: revision(number, outcome), timeout=150, message=f"revision {number}"
            )
        except TimeoutError as error:
            raise AssertionError(f"{error}\noperator log:\n{operator.log()}") from error
        return found

    cluster.apply(_graph("1"), namespace)
    first = wait_revision(1, "Ready")["spec"]  # as the API server holds it: defaults filled in
    cluster.apply(_graph("2"), namespace)
    applied = wait_revision(2)
    second = applied["spec"]
    assert second["modules"][0]["version"] == "2"
    revisions = applied["status"]["revisions"]
    assert [(r["revision"], r["generation"]) for r in revisions] == [(1, 1), (2, 2)]
    assert [r["spec"] for r in revisions] == [first, second]

    shown = subprocess.run(
        [sys.executable, "-m", "modulemesh", "status", "rb", "-n", namespace,
         "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    rows = [line.split() for line in shown.split("Revisions:\n")[1].splitlines()]
    assert rows[0] == ["REVISION", "GENERATION", "APPLIED", "OUTCOME"]
    assert rows[1][:2] + rows[1][3:] == ["1", "1", "Ready"]
    assert rows[2][:2] == ["2", "2"] and rows[2][3] in ("Progressing", "Ready")

    missing = _rollback(cluster, namespace, "--to-revision", "9")
    assert missing.returncode == 1, missing
    assert (
        f"revision 9 is not in graph {namespace}/rb's history (kept: 1, 2; the last 10 are kept)"
        in missing.stderr
    )
    assert graph()["metadata"]["generation"] == 2

    done = _rollback(cluster, namespace)
    assert done.returncode == 0, done.stderr
    assert "set to the spec of revision 1" in done.stdout
    back = wait_revision(3)
    assert back["metadata"]["generation"] == 3
    assert back["spec"] == first
    assert back["status"]["revisions"][-1]["spec"] == first

    def module_runs(version: str) -> bool:
        deployment = cluster.kubectl_json("-n", namespace, "get", "deployment", "rb-clf")
        runtime = next(
            c
            for c in deployment["spec"]["template"]["spec"]["containers"]
            if c["name"] == "runtime"
        )
        return f"--model=/models/v{version}.onnx" in runtime["args"]

    wait_until(lambda: module_runs("1"), timeout=60, message="the module back on v1")

    named = _rollback(cluster, namespace, "--to-revision", "2")
    assert named.returncode == 0, named.stderr
    assert wait_revision(4)["spec"] == second
    wait_until(lambda: module_runs("2"), timeout=60, message="the module on v2 again")
