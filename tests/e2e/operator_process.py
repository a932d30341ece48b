"""The operator as a real process against the local control plane, for e2e tests."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import yaml

from e2e.cluster import Cluster, ClusterError, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """``modulemesh operator`` started with a kubeconfig; logs go to a file for diagnosis."""

    def __init__(
        self,
        cluster: Cluster,
        log_path: Path,
        *,
        kubeconfig: Path | None = None,
        namespaces: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        envelope_interval_s: float = 3,
        resync_interval_s: float = 60,
    ) -> None:
        self.cluster = cluster
        self.envelope_interval_s = envelope_interval_s
        self.resync_interval_s = resync_interval_s
        self.log_path = log_path
        self.kubeconfig = kubeconfig or cluster.kubeconfig
        self.namespaces = namespaces
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> OperatorProcess:
        """Start the operator and wait until its liveness endpoint answers."""
        args = [
            sys.executable,
            "-m",
            "modulemesh",
            "operator",
            "--kubeconfig",
            str(self.kubeconfig),
            "--log-format",
            "plain",
            "--envelope-interval",
            f"{self.envelope_interval_s:g}",
            "--resync-interval",
            f"{self.resync_interval_s:g}",
            "--liveness",
            f"http://127.0.0.1:{self.port}/healthz",
        ]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        self._log = self.log_path.open("ab")
        env = {**os.environ, **self.extra_env, "KUBECONFIG": str(self.kubeconfig)}
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        wait_until(self._live, timeout=60, message=f"operator liveness (log: {self.log_path})")
        return self

    def _live(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def log(self) -> str:
        """The operator's log so far (its tail, for assertion messages)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-6000:]

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (graceful) or SIGKILL (a crash) the operator's process group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
        self.proc = None


def service_account_kubeconfig(
    cluster: Cluster, namespace: str, account: str, path: Path, *, duration: str = "1h"
) -> Path:
    """A kubeconfig holding only a token of ServiceAccount ``namespace/account`` (what an
    operator running in the cluster under it would be allowed), written to ``path``."""
    token = cluster.kubectl(
        "-n", namespace, "create", "token", account, f"--duration={duration}"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    ca = (
        server.get("certificate-authority-data")
        or base64.b64encode(Path(server["certificate-authority"]).read_bytes()).decode()
    )
    user = {"name": "operator", "user": {"token": token}}
    context = {"name": "operator", "context": {"cluster": "local", "user": "operator"}}
    cluster_entry = {
        "name": "local",
        "cluster": {"server": server["server"], "certificate-authority-data": ca},
    }
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster_entry],
                "users": [user],
                "contexts": [context],
                "current-context": "operator",
            }
        )
    )
    return path


def install_crds(cluster: Cluster) -> None:
    """Apply the checked-in CRDs (server-side, like an upgrade would) and wait for them."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    for crd in ("modulegraphs.modulemesh.io", "privacygates.modulemesh.io"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    # Discovery, and later the published OpenAPI that `kubectl explain` reads, catch up a moment
    # (sometimes several seconds on a busy machine) after Established.
    probes = (("get", "mg", "-A"), ("explain", "modulegraph.spec.routing"))
    deadline = time.monotonic() + 60
    while True:
        failed = [p for p in probes if cluster.kubectl(*p, check=False).returncode != 0]
        if not failed:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"the CRDs are not served 60 s after Established: {failed}")
        time.sleep(0.5)


# --- the operator's admission webhook ---------------------------------------------------------

WEBHOOK_CONFIGURATION = "modulemesh.io"


def local_webhook_env(**extra: str) -> dict[str, str]:
    """Environment for an operator process serving its webhook on 127.0.0.1 (called by URL)."""
    return {
        "MODULEMESH_WEBHOOK_PORT": str(free_port()),
        "MODULEMESH_WEBHOOK_ADDR": "127.0.0.1",
        "MODULEMESH_WEBHOOK_HOST": "127.0.0.1",
        **extra,
    }


def install_webhook_configuration(
    cluster: Cluster, env: Mapping[str, str], *, replace: bool = False
) -> None:
    """Apply (or replace) what ``modulemesh webhook-configuration`` prints for an operator
    started with ``env``, as an admin does: the operator itself may not create it.

    Never applied over a configuration left by an interrupted run: ``kubectl apply`` keeps the
    fields it did not set, so the old CA bundle would stay until the new operator patches it,
    and a test waiting for "a CA bundle is set" would go ahead with the wrong one.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "modulemesh", "webhook-configuration"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise ClusterError(f"modulemesh webhook-configuration failed: {proc.stderr}")
    if not replace:
        delete_webhook_configuration(cluster)
    cluster.kubectl("replace" if replace else "apply", "-f", "-", input=proc.stdout)


def ca_bundles_set(cluster: Cluster) -> bool:
    """Whether both webhooks of the configuration carry a CA bundle (the operator set it)."""
    hooks = webhooks_in(cluster)
    return len(hooks) == 2 and all(h["clientConfig"].get("caBundle") for h in hooks)


def webhooks_in(cluster: Cluster) -> list[dict[str, Any]]:
    """The webhooks of the operator's ValidatingWebhookConfiguration (none if it is absent)."""
    found = cluster.kubectl(
        "get", "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "-o", "yaml", check=False
    )
    if found.returncode != 0:
        return []
    return list(yaml.safe_load(found.stdout).get("webhooks") or [])


def delete_webhook_configuration(cluster: Cluster) -> None:
    """Remove the configuration a test installed (so later tests meet no webhook)."""
    cluster.kubectl(
        "delete", "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "--ignore-not-found",
        check=False,
    )  # fmt: skip


@contextmanager
def watching_operator(cluster: Cluster, log: Path) -> Iterator[OperatorProcess]:
    """The CRDs installed and one operator process watching every namespace, stopped on exit
    (the fixture most e2e modules need)."""
    install_crds(cluster)
    proc = OperatorProcess(cluster, log).start()
    try:
        yield proc
    finally:
        proc.stop()


@contextmanager
def serving_webhook(cluster: Cluster, log: Path) -> Iterator[OperatorProcess]:
    """An operator serving the webhook on 127.0.0.1 with its CA bundle set in the configuration
    (installed as documented for a local operator); both are removed on exit."""
    install_crds(cluster)
    env = local_webhook_env()
    install_webhook_configuration(cluster, env)
    proc = OperatorProcess(cluster, log, env=env)
    try:
        proc.start()
        wait_until(
            lambda: ca_bundles_set(cluster),
            timeout=60,
            message=f"the operator's CA bundle in the webhook configuration (log: {log})",
        )
        yield proc
    finally:
        proc.stop()
        delete_webhook_configuration(cluster)


def apply_doc(cluster: Cluster, namespace: str, doc: dict[str, Any], *extra: str) -> Any:
    """`kubectl apply -f -` of one object, not checked (tests read the refusal)."""
    return cluster.kubectl(
        "apply", "-n", namespace, *extra, "-f", "-", input=yaml.safe_dump(doc), check=False
    )
