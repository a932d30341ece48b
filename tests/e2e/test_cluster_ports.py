"""A second local cluster next to the shared one (issue 14, defect 8).

Two cluster directories used to share the default ports 36443/32379, so a second `hack/cluster/up`
(another HOME or MODULEMESH_CLUSTER_DIR) failed on a busy port, and the e2e fixture reused any
running cluster. Here a second cluster really starts next to the session's, on ports it picked
and stored in its directory, which `env`, `status`, `down` and a later `up` all use; explicit
ports still win (and are refused when taken); the e2e fixture refuses the second cluster, which
it did not start, unless MODULEMESH_E2E_REUSE_CLUSTER=1. Only the second cluster is ever stopped.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.cluster import (
    REUSE_ENV,
    Cluster,
    ClusterError,
    cluster_env,
    cluster_running,
    ensure_cluster,
    run_script,
)

pytestmark = pytest.mark.e2e

UP_TIMEOUT_S = 300.0


@dataclass
class SecondCluster:
    """A cluster directory other than the session's, and the environment that selects it."""

    state_dir: Path
    env: dict[str, str]

    def run(self, script: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """Run a hack/cluster script for this directory."""
        return run_script(script, *args, timeout=UP_TIMEOUT_S, env={**self.env, **extra})

    def up(self) -> None:
        proc = self.run("up")
        assert proc.returncode == 0, f"second cluster did not start:\n{proc.stderr}"

    def stored_ports(self) -> dict[str, int]:
        """The ports file `up` writes: KEY=PORT lines."""
        lines = (self.state_dir / "ports").read_text().splitlines()
        return {k: int(v) for k, _, v in (line.partition("=") for line in lines)}

    def settings(self) -> dict[str, str]:
        out = self.run("env").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _port_of(server: str) -> int:
    return int(server.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def second(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecondCluster]:
    """A second cluster directory (not started yet); stopped and purged after the module."""
    state_dir = tmp_path_factory.mktemp("second-cluster") / "cluster"
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("MODULEMESH_APISERVER_PORT", "MODULEMESH_ETCD_PORT", "MODULEMESH_CLUSTER_OWNER")
    }
    env["MODULEMESH_CLUSTER_DIR"] = str(state_dir)
    sc = SecondCluster(state_dir=state_dir, env=env)
    yield sc
    proc = sc.run("down", "--purge")
    assert proc.returncode == 0, proc.stderr
    assert cluster_running(), "stopping the second cluster stopped the session's"


def test_second_cluster_starts_on_its_own_stored_ports(
    cluster: Cluster, second: SecondCluster
) -> None:
    """Next to the running session cluster (on its ports), a second one starts on others."""
    second.up()
    ports = second.stored_ports()
    session_port = _port_of(cluster.server)
    assert ports["APISERVER_PORT"] != session_port
    session_ports = cluster.state_dir / "ports"
    session_etcd = (
        int(dict(line.split("=") for line in session_ports.read_text().split())["ETCD_PORT"])
        if session_ports.is_file()
        else 32379
    )
    assert abs(ports["ETCD_PORT"] - session_etcd) >= 2  # client and peer ports both apart
    settings = second.settings()
    assert settings["APISERVER"] == f"https://127.0.0.1:{ports['APISERVER_PORT']}"
    status = second.run("status")
    assert status.returncode == 0 and str(ports["APISERVER_PORT"]) in status.stdout
    # Two different clusters: a namespace made in the second is not in the session's.
    kubectl = [cluster.kubectl_path.as_posix(), "--kubeconfig", settings["KUBECONFIG"]]
    made = subprocess.run(
        [*kubectl, "create", "namespace", "only-in-second"], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    assert cluster.kubectl("get", "namespace", "only-in-second", check=False).returncode != 0
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_a_later_up_reuses_the_stored_ports_or_moves_off_a_taken_one(
    cluster: Cluster, second: SecondCluster
) -> None:
    """`down` then `up` keeps the stored ports; one taken meanwhile is replaced and stored."""
    if second.run("status").returncode != 0:
        second.up()
    before = second.stored_ports()
    assert second.run("down").returncode == 0
    assert second.stored_ports() == before  # env/status/down keep agreeing on a stopped cluster
    second.up()
    assert second.stored_ports() == before
    assert second.run("down").returncode == 0
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", before["APISERVER_PORT"]))
        squatter.listen()
        second.up()
        after = second.stored_ports()
        assert after["APISERVER_PORT"] != before["APISERVER_PORT"]
        assert second.settings()["APISERVER"] == f"https://127.0.0.1:{after['APISERVER_PORT']}"
        assert second.run("status").returncode == 0
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_an_explicit_port_in_use_is_refused_by_name(second: SecondCluster) -> None:
    """MODULEMESH_APISERVER_PORT wins over picking, so a taken one fails naming it."""
    if second.run("status").returncode == 0:
        assert second.run("down").returncode == 0
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        proc = second.run("up", MODULEMESH_APISERVER_PORT=str(port))
    assert proc.returncode != 0
    assert f"MODULEMESH_APISERVER_PORT={port}" in proc.stderr and "in use" in proc.stderr
    assert second.run("status").returncode != 0


def test_e2e_fixture_refuses_a_cluster_it_did_not_start_unless_told(
    second: SecondCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster started by hand (owner `user`) is refused; REUSE_ENV=1 lets the tests in."""
    if second.run("status").returncode != 0:
        second.up()
    monkeypatch.setenv("MODULEMESH_CLUSTER_DIR", str(second.state_dir))
    monkeypatch.delenv(REUSE_ENV, raising=False)
    assert cluster_env()["CLUSTER_STATE"] == str(second.state_dir)
    with pytest.raises(ClusterError, match=f"not started by the e2e tests.*{REUSE_ENV}=1"):
        ensure_cluster(timeout=UP_TIMEOUT_S)
    monkeypatch.setenv(REUSE_ENV, "1")
    reused = ensure_cluster(timeout=UP_TIMEOUT_S)
    try:
        assert reused.state_dir == second.state_dir and not reused.started_here
    finally:
        assert reused.release() is False  # never stops a cluster started by hand
    assert second.run("status").returncode == 0
