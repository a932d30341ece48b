"""Helpers for end-to-end tests against the local Kubernetes control plane (hack/cluster).

The control plane is real: etcd, kube-apiserver, kube-controller-manager and kube-scheduler built
from their Go modules, with kwok simulating the nodes and the pods' lifecycle. Everything listens
on 127.0.0.1. `ensure_cluster()` reuses a running cluster or starts one (building the binaries
first if they are missing); `Cluster.stop()` stops it.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK_CLUSTER = REPO_ROOT / "hack" / "cluster"

# A cold build of the control plane takes tens of minutes on two cores; a warm start seconds.
UP_TIMEOUT_S = float(os.environ.get("MODULEMESH_CLUSTER_UP_TIMEOUT", "3600"))
KUBECTL_TIMEOUT_S = 60.0
# Written by hack/cluster/up into <state>/owner when a test fixture starts the cluster; a fixture
# stops only a cluster of FIXTURE_OWNER. KEPT_OWNER: started by a fixture told to keep it running.
FIXTURE_OWNER = "pytest"
KEPT_OWNER = "pytest-kept"
# The e2e tests start cluster-wide operators and webhooks; they run in a cluster that no test
# fixture started (one started by hand with hack/cluster/up, or by a benchmark) only when told.
REUSE_ENV = "MODULEMESH_E2E_REUSE_CLUSTER"

T = TypeVar("T")


class ClusterError(RuntimeError):
    """A hack/cluster script or a kubectl call failed."""


def run_script(
    name: str, *args: str, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run hack/cluster/NAME (with `env` instead of this process's environment when given)."""
    return subprocess.run(
        [str(HACK_CLUSTER / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else dict(env),
    )


def cluster_env() -> dict[str, str]:
    """The KEY=VALUE settings printed by hack/cluster/env (paths of binaries, kubeconfig...)."""
    proc = run_script("env", timeout=30)
    if proc.returncode != 0:
        raise ClusterError(f"hack/cluster/env failed: {proc.stderr.strip()}")
    settings: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            settings[key] = value
    return settings


def cluster_running() -> bool:
    """Whether every component is running and the API server is ready."""
    return run_script("status", timeout=30).returncode == 0


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.5,
    message: str = "condition",
) -> T:
    """Call `probe` until it returns something other than None/False; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last is not None and last is not False:
            return last
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)


class UsersLock:
    """A shared flock held by every test session that uses the cluster.

    A session may stop the cluster only when it can turn its shared lock into an exclusive one,
    that is when no other session (on this machine) is using the cluster.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = path.open("a")
        fcntl.flock(self._file, fcntl.LOCK_SH)

    def try_exclusive(self) -> bool:
        if self._file is None:
            return False
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def share(self) -> None:
        """Turn an exclusive lock (from `try_exclusive`) back into a shared one."""
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_SH)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None


@dataclass(frozen=True)
class Cluster:
    """A running local control plane and the tools to talk to it."""

    kubeconfig: Path
    kubectl_path: Path
    helm_path: Path
    bin_dir: Path
    state_dir: Path
    server: str
    k8s_version: str
    started_here: bool
    users_lock: UsersLock | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses: KUBECONFIG set and kubectl/helm first on PATH."""
        path = f"{self.kubectl_path.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": path}

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = KUBECTL_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raise ClusterError on failure when `check`."""
        proc = subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ClusterError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc

    def kubectl_json(self, *args: str, timeout: float = KUBECTL_TIMEOUT_S) -> Any:
        """Run `kubectl ... -o json` and return the parsed document."""
        return json.loads(self.kubectl(*args, "-o", "json", timeout=timeout).stdout)

    def helm(
        self, *args: str, check: bool = True, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """Run helm against this cluster."""
        proc = subprocess.run(
            [str(self.helm_path), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env,
        )
        if check and proc.returncode != 0:
            raise ClusterError(
                f"helm {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc

    def apply(
        self, manifests: Mapping[str, Any] | Sequence[Mapping[str, Any]], namespace: str | None
    ) -> None:
        """`kubectl apply` one object or a list of objects given as dicts."""
        docs = [manifests] if isinstance(manifests, Mapping) else list(manifests)
        text = yaml.safe_dump_all([dict(d) for d in docs])
        ns_args = ["-n", namespace] if namespace else []
        self.kubectl("apply", *ns_args, "-f", "-", input=text)

    def create_namespace(
        self, prefix: str = "e2e", labels: Mapping[str, str] | None = None, timeout: float = 60.0
    ) -> str:
        """Create a uniquely named namespace and wait until its default ServiceAccount exists."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": dict(labels or {})},
            },
            namespace=None,
        )
        wait_until(
            lambda: (
                self.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode
                == 0
            ),
            timeout=timeout,
            message=f"the default ServiceAccount in namespace {name}",
        )
        return name

    def delete_namespace(self, name: str, *, wait: bool = False, timeout: float = 120.0) -> None:
        """Delete a namespace (and everything in it)."""
        self.kubectl(
            "delete",
            "namespace",
            name,
            "--ignore-not-found",
            f"--wait={'true' if wait else 'false'}",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 10,
        )

    def stop(self) -> None:
        """Stop the control plane (hack/cluster/down)."""
        proc = run_script("down", timeout=120)
        if proc.returncode != 0:
            raise ClusterError(f"hack/cluster/down failed: {proc.stderr.strip()}")

    def release(self, *, stop_if_ours: bool = True) -> bool:
        """End this session's use of the cluster; return whether it was stopped.

        The cluster is stopped only when a test fixture started it (never one started by hand
        with hack/cluster/up) and no other test session is still using it.
        """
        stopped = False
        try:
            owner_file = self.state_dir / "owner"
            owner = owner_file.read_text().strip() if owner_file.is_file() else ""
            if (
                stop_if_ours
                and owner == FIXTURE_OWNER
                and self.users_lock is not None
                and self.users_lock.try_exclusive()
            ):
                self.stop()
                stopped = True
        finally:
            if self.users_lock is not None:
                self.users_lock.release()
        return stopped


def refuse_foreign_cluster(state_dir: Path, server: str) -> None:
    """Raise unless a test fixture started the running cluster or REUSE_ENV=1 allows it."""
    owner_file = state_dir / "owner"
    owner = owner_file.read_text().strip() if owner_file.is_file() else ""
    if owner in (FIXTURE_OWNER, KEPT_OWNER) or os.environ.get(REUSE_ENV, "") in ("1", "true"):
        return
    raise ClusterError(
        f"the cluster running at {server} (state {state_dir}) was not started by the e2e tests "
        f"(owner: {owner or 'not recorded'}); the tests install cluster-wide operators and "
        f"webhooks in it. Set {REUSE_ENV}=1 to run them there anyway, or stop it "
        "(hack/cluster/down) or use another MODULEMESH_CLUSTER_DIR so the tests start their own"
    )


def ensure_cluster(timeout: float = UP_TIMEOUT_S, *, keep: bool = False) -> Cluster:
    """Reuse the running control plane or start one (building binaries when they are absent).

    Holds a shared users lock until `Cluster.release()` so that no other test session stops the
    cluster underneath this one. With `keep`, a cluster started here is recorded as kept
    (KEPT_OWNER), so no fixture stops it later. A running cluster that no fixture started is
    refused unless REUSE_ENV=1 (see `refuse_foreign_cluster`).
    """
    settings = cluster_env()
    users_lock = UsersLock(Path(settings["CLUSTER_STATE"]).parent / "cluster.users.lock")
    started_here = False
    try:
        if cluster_running():
            refuse_foreign_cluster(Path(settings["CLUSTER_STATE"]), settings["APISERVER"])
        else:
            proc = subprocess.run(
                [str(HACK_CLUSTER / "up")],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env={
                    **os.environ,
                    "MODULEMESH_CLUSTER_OWNER": KEPT_OWNER if keep else FIXTURE_OWNER,
                },
            )
            if proc.returncode != 0:
                raise ClusterError(
                    f"hack/cluster/up failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
                )
            started_here = "already running" not in proc.stderr
            if not started_here:  # another session or person started it meanwhile
                refuse_foreign_cluster(Path(settings["CLUSTER_STATE"]), settings["APISERVER"])
    except BaseException:
        users_lock.release()
        raise
    return cluster_from(settings, started_here=started_here, users_lock=users_lock)


def cluster_from(
    settings: Mapping[str, str], *, started_here: bool, users_lock: UsersLock | None = None
) -> Cluster:
    """The Cluster that hack/cluster/env's ``settings`` describe."""
    return Cluster(
        kubeconfig=Path(settings["KUBECONFIG"]),
        kubectl_path=Path(settings["KUBECTL"]),
        helm_path=Path(settings["HELM"]),
        bin_dir=Path(settings["BIN_DIR"]),
        state_dir=Path(settings["CLUSTER_STATE"]),
        server=settings["APISERVER"],
        k8s_version=settings["K8S_VERSION"],
        started_here=started_here,
        users_lock=users_lock,
    )


def binaries_built() -> bool:
    """Whether the control-plane binaries and kubectl/helm are already in the cache."""
    settings = cluster_env()
    return (Path(settings["BIN_DIR"]) / ".complete").is_file() and Path(
        settings["KUBECTL"]
    ).is_file()
