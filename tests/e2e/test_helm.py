"""The Helm chart on the real control plane: install, least-privilege RBAC, upgrade, uninstall.

The chart is installed into a namespace that enforces the `restricted` Pod Security Standard,
watching a second restricted namespace. Then the operator runs as a local process authenticated
only as the chart's ServiceAccount (a token from `kubectl create token`) and reconciles the
quickstart example there, which proves the RBAC is sufficient and that the pods the operator
creates are admitted under `restricted`; `kubectl auth can-i` shows the ServiceAccount cannot
read Secrets or touch anything else, and may only get and patch the chart's own
ValidatingWebhookConfiguration (no create). `helm upgrade` applies a changed value, keeps the CA
bundle the operator patched into that configuration and leaves the CRDs alone (they are
upgraded with `kubectl apply --server-side`, docs/operations.md "Upgrade"); `helm uninstall`
removes the operator, its RBAC and the configuration but keeps the CRDs and the graphs.

The tests of TestNamespacedRelease run in order against one release (install first).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster import Cluster, wait_until
from e2e.operator_process import (
    REPO_ROOT,
    WEBHOOK_CONFIGURATION,
    OperatorProcess,
    ca_bundles_set,
    install_webhook_configuration,
    local_webhook_env,
    service_account_kubeconfig,
)

CHART = REPO_ROOT / "charts" / "modulemesh"
CHART_CRDS = CHART / "crds"
EXAMPLE = REPO_ROOT / "examples" / "quickstart.yaml"
CRDS = ("modulegraphs.modulemesh.io", "privacygates.modulemesh.io")
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
}


@dataclass
class Release:
    """One installed release of the chart."""

    cluster: Cluster
    name: str
    namespace: str
    watched: tuple[str, ...]
    extra_namespaces: list[str] = field(default_factory=list)

    @property
    def fullname(self) -> str:
        return f"{self.name}-modulemesh"

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"

    def can_i(self, verb: str, resource: str, namespace: str | None = None, *extra: str) -> bool:
        """`kubectl auth can-i` as the release's ServiceAccount."""
        ns_args = ["-n", namespace] if namespace else []
        proc = self.cluster.kubectl(
            "auth", "can-i", verb, resource, *ns_args, *extra, f"--as={self.user}", check=False
        )
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), f"can-i {verb} {resource}: {proc.stdout}{proc.stderr}"
        return answer == "yes"

    def deployment(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.cluster.kubectl_json(
            "-n", self.namespace, "get", "deployment", self.fullname
        )
        return doc

    def env(self) -> dict[str, str]:
        container = self.deployment()["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value", "") for e in container["env"]}


def helm_install(
    cluster: Cluster, name: str, namespace: str, *args: str, wait: bool = True
) -> None:
    wait_args = ["--wait", "--timeout", "180s"] if wait else []
    cluster.helm("install", name, str(CHART), "-n", namespace, *wait_args, *args, timeout=300)


def sa_kubeconfig(cluster: Cluster, release: Release, path: Path) -> Path:
    """A kubeconfig holding only a token of the release's ServiceAccount."""
    return service_account_kubeconfig(cluster, release.namespace, release.fullname, path)


def crd_state(cluster: Cluster) -> dict[str, tuple[int, Any]]:
    """generation and spec of each CRD (generation moves only when the spec changes)."""
    out = {}
    for crd in CRDS:
        doc = cluster.kubectl_json("get", "crd", crd)
        out[crd] = (int(doc["metadata"]["generation"]), doc["spec"])
    return out


def graph_condition(graph: dict[str, Any], type_: str) -> str | None:
    for c in (graph.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return str(c["status"])
    return None


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Iterator[Release]:
    """The chart installed in a restricted namespace, watching one restricted namespace."""
    suffix = uuid.uuid4().hex[:6]
    namespace = cluster.create_namespace("mm-system", labels=RESTRICTED)
    watched = cluster.create_namespace("mm-apps", labels=RESTRICTED)
    rel = Release(cluster, f"mm-{suffix}", namespace, (watched,))
    yield rel
    cluster.helm("uninstall", rel.name, "-n", namespace, "--ignore-not-found", check=False)
    for ns in (namespace, *rel.watched, *rel.extra_namespaces):
        cluster.delete_namespace(ns)


class TestNamespacedRelease:
    def test_install_into_a_restricted_namespace(self, release: Release) -> None:
        cluster = release.cluster
        helm_install(
            cluster,
            release.name,
            release.namespace,
            "--set",
            f"watchNamespaces={{{release.watched[0]}}}",
            "--set",
            "images.operator.repository=localhost/modulemesh",
            "--set",
            "images.operator.tag=dev",
        )
        status = json.loads(
            cluster.helm("status", release.name, "-n", release.namespace, "-o", "json").stdout
        )
        assert status["info"]["status"] == "deployed"
        ns = cluster.kubectl_json("get", "namespace", release.namespace)
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        # The operator pod was admitted under `restricted` and runs (kwok runs it on a node).
        pods = cluster.kubectl_json(
            "-n",
            release.namespace,
            "get",
            "pods",
            "-l",
            f"app.kubernetes.io/instance={release.name}",
        )["items"]
        assert len(pods) == 1, pods
        assert pods[0]["status"]["phase"] == "Running"
        assert pods[0]["spec"]["containers"][0]["image"] == "localhost/modulemesh:dev"
        deployment = release.deployment()
        assert deployment["status"].get("readyReplicas") == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        # the CRDs are there (installed by helm from crds/ if the cluster had none)
        for crd in CRDS:
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")

    def test_a_non_restricted_pod_would_have_been_refused(self, release: Release) -> None:
        # The namespace really enforces: the same pod without its securityContext is refused.
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "unrestricted"},
            "spec": {"containers": [{"name": "c", "image": "localhost/modulemesh:dev"}]},
        }
        proc = release.cluster.kubectl(
            "-n",
            release.namespace,
            "apply",
            "--dry-run=server",
            "-f",
            "-",
            input=json.dumps(pod),
            check=False,
        )
        assert proc.returncode != 0
        assert "violates PodSecurity" in proc.stderr and "restricted" in proc.stderr

    def test_service_account_has_what_the_operator_needs(self, release: Release) -> None:
        ns = release.watched[0]
        wanted = [
            ("watch", "modulegraphs.modulemesh.io"),
            ("patch", "modulegraphs.modulemesh.io"),
            ("list", "privacygates.modulemesh.io"),
            ("create", "deployments.apps"),
            ("patch", "deployments.apps"),
            ("delete", "deployments.apps"),
            ("create", "services"),
            ("patch", "configmaps"),
            ("create", "networkpolicies.networking.k8s.io"),
            ("watch", "pods"),
            ("create", "events"),
            ("create", "events.events.k8s.io"),
            # A differentially private graph's router: its own account, a Role on its ledger
            # ConfigMap (get, update, create: the operator must hold what it grants) and binding.
            ("create", "serviceaccounts"),
            ("create", "roles.rbac.authorization.k8s.io"),
            ("create", "rolebindings.rbac.authorization.k8s.io"),
            ("update", "configmaps"),
        ]
        for verb, resource in wanted:
            assert release.can_i(verb, resource, ns), (verb, resource)
        assert release.can_i("patch", "modulegraphs.modulemesh.io", ns, "--subresource=status")
        assert release.can_i("list", "customresourcedefinitions.apiextensions.k8s.io")
        assert release.can_i("watch", "namespaces")  # kopf notices watched namespaces
        # The admission webhook's configuration: the chart's, read and patched by name only;
        # no create, so the operator cannot register a webhook of its own.
        hooks = "validatingwebhookconfigurations.admissionregistration.k8s.io"
        assert release.can_i("get", f"{hooks}/modulemesh.io")
        assert release.can_i("patch", f"{hooks}/modulemesh.io")
        assert not release.can_i("create", hooks)
        assert not release.can_i("patch", f"{hooks}/someone-elses")
        assert not release.can_i("delete", f"{hooks}/modulemesh.io")
        assert not release.can_i("list", hooks)
        assert not release.can_i(
            "create", "mutatingwebhookconfigurations.admissionregistration.k8s.io"
        )
        # The chart installed it, calling the release's Service, with no CA bundle yet.
        config = release.cluster.kubectl_json(
            "get", "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION
        )
        for hook in config["webhooks"]:
            assert hook["clientConfig"]["service"]["namespace"] == release.namespace
            assert "caBundle" not in hook["clientConfig"]
            assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == list(
                release.watched
            )

    def test_service_account_cannot_read_secrets_or_touch_anything_else(
        self, release: Release
    ) -> None:
        ns = release.watched[0]
        refused = [
            ("get", "secrets", ns),
            ("list", "secrets", ns),
            ("watch", "secrets", release.namespace),
            ("list", "secrets", None),  # cluster-wide
            ("delete", "pods", ns),
            ("create", "pods", ns),
            ("create", "pods/exec", ns),
            ("update", "deployments.apps", ns),
            ("create", "serviceaccounts/token", release.namespace),
            ("escalate", "roles.rbac.authorization.k8s.io", ns),
            ("bind", "roles.rbac.authorization.k8s.io", ns),
            ("create", "roles.rbac.authorization.k8s.io", release.namespace),
            ("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
            ("impersonate", "serviceaccounts", ns),
            ("get", "nodes", None),  # it may list them (sizes, for Scheduled), nothing more
            ("watch", "nodes", None),
            ("patch", "nodes", None),
            ("get", "nodes/proxy", None),
            ("create", "customresourcedefinitions.apiextensions.k8s.io", None),
            ("delete", "modulegraphs.modulemesh.io", ns),
            ("create", "deployments.apps", release.namespace),  # not a watched namespace
            ("create", "deployments.apps", "kube-system"),
            ("list", "modulegraphs.modulemesh.io", "default"),
            ("create", "leases.coordination.k8s.io", ns),
        ]
        allowed = [(v, r, n) for v, r, n in refused if release.can_i(v, r, n)]
        assert allowed == [], f"{release.user} may: {allowed}"
        # and nothing anywhere is granted with a wildcard
        listing = release.cluster.kubectl(
            "auth", "can-i", "--list", "-n", ns, f"--as={release.user}"
        ).stdout
        rows = [line.split() for line in listing.splitlines()[1:] if line.strip()]
        assert any(row[0] == "deployments.apps" for row in rows), listing
        for row in rows:
            assert row[0] not in ("*", "*.*") and "[*]" not in row, row
            assert not row[0].startswith("secrets"), row

    def test_operator_as_the_service_account_reconciles_an_example(
        self, release: Release, tmp_path: Path
    ) -> None:
        cluster = release.cluster
        ns = release.watched[0]
        kubeconfig = sa_kubeconfig(cluster, release, tmp_path / "sa.kubeconfig")
        # The token alone reaches the API as the ServiceAccount, and Secrets stay closed.
        as_sa = cluster.kubectl(
            "--kubeconfig", str(kubeconfig), "-n", ns, "get", "secrets", check=False
        )
        assert as_sa.returncode != 0 and "forbidden" in as_sa.stderr.lower()

        # With the webhook on, as the chart runs it, but called by URL since it runs here: the
        # chart's configuration is swapped for the one documented for a local operator, and
        # put back afterwards.
        chart_config = cluster.kubectl_json(
            "get", "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION
        )
        for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            chart_config["metadata"].pop(key, None)
        env = local_webhook_env()
        install_webhook_configuration(
            cluster, {**env, "MODULEMESH_WATCH_NAMESPACES": ns}, replace=True
        )
        op = OperatorProcess(
            cluster, tmp_path / "operator.log", kubeconfig=kubeconfig, namespaces=(ns,), env=env
        )
        op.start()
        try:
            # It could read the configuration and set its CA bundle, and it answers.
            wait_until(
                lambda: ca_bundles_set(cluster), timeout=60, message="the operator's CA bundle"
            )
            bad = yaml.safe_load(EXAMPLE.read_text())
            bad["spec"]["routing"]["nodes"][0]["steps"][1]["module"] = "clasifier"
            refused = cluster.kubectl(
                "-n", ns, "apply", "--dry-run=server", "-f", "-",
                input=yaml.safe_dump(bad), check=False,
            )  # fmt: skip
            assert 'webhook "modulegraphs.modulemesh.io" denied' in refused.stderr, refused
            assert "spec.routing.nodes[0].steps[1].module" in refused.stderr, refused
            cluster.kubectl("-n", ns, "apply", "-f", str(EXAMPLE))

            def ready() -> dict[str, Any] | None:
                graph: dict[str, Any] = cluster.kubectl_json("-n", ns, "get", "mg", "quickstart")
                return graph if graph_condition(graph, "Ready") == "True" else None

            try:
                graph = wait_until(ready, timeout=150, interval=1.0, message="quickstart Ready")
            except TimeoutError as error:
                raise AssertionError(f"{error}\noperator log:\n{op.log()}") from error
            assert graph_condition(graph, "Validated") == "True"
            assert not graph["metadata"].get("finalizers"), "the operator puts no finalizers"
            # Its pods were admitted in the restricted namespace.
            pods = cluster.kubectl_json(
                "-n", ns, "get", "pods", "-l", "modulemesh.io/graph=quickstart"
            )["items"]
            assert len(pods) >= 3, [p["metadata"]["name"] for p in pods]  # 2 modules + router
            assert all(p["status"]["phase"] == "Running" for p in pods)
            kinds = {
                kind: cluster.kubectl_json(
                    "-n", ns, "get", kind, "-l", "modulemesh.io/graph=quickstart"
                )["items"]
                for kind in ("deployments", "services", "configmaps")
            }
            assert all(kinds.values()), {k: len(v) for k, v in kinds.items()}
            # It could post Events.
            events = cluster.kubectl_json(
                "-n", ns, "get", "events", "--field-selector", "involvedObject.name=quickstart"
            )["items"]
            assert any(e["reason"] == "Ready" for e in events), [e["reason"] for e in events]
            log = op.log()
            for denial in ("forbidden", "not enough permissions"):
                assert denial not in log.lower(), f"RBAC denial in the operator log:\n{log}"
        finally:
            op.stop()
            cluster.kubectl("replace", "-f", "-", input=json.dumps(chart_config))

    def test_helm_upgrade_applies_values_and_leaves_crds_alone(
        self, release: Release, tmp_path: Path
    ) -> None:
        cluster = release.cluster
        before_crds = crd_state(cluster)
        generation = release.deployment()["metadata"]["generation"]
        # The CA bundle the operator patches into the chart's configuration (here as the
        # ServiceAccount, the way the operator does) survives the upgrade.
        bundle = base64.b64encode(b"not a real CA, but kept").decode()
        patch = {
            "webhooks": [
                {"name": "modulegraphs.modulemesh.io", "clientConfig": {"caBundle": bundle}}
            ]
        }
        kubeconfig = sa_kubeconfig(cluster, release, tmp_path / "sa.kubeconfig")
        cluster.kubectl(
            "--kubeconfig", str(kubeconfig), "patch", "validatingwebhookconfiguration",
            WEBHOOK_CONFIGURATION, "--type=strategic", "-p", json.dumps(patch),
        )  # fmt: skip
        extra_ns = cluster.create_namespace("mm-more", labels=RESTRICTED)
        release.extra_namespaces.append(extra_ns)
        cluster.helm(
            "upgrade",
            release.name,
            str(CHART),
            "-n",
            release.namespace,
            "--reuse-values",
            "--set",
            "envelopeInterval=5",
            "--set",
            "gpuResourceName=amd.com/gpu",
            "--set",
            f"watchNamespaces={{{release.watched[0]},{extra_ns}}}",
            "--wait",
            "--timeout",
            "180s",
        )
        env = release.env()
        assert env["MODULEMESH_ENVELOPE_INTERVAL"] == "5"
        assert env["MODULEMESH_GPU_RESOURCE"] == "amd.com/gpu"
        assert env["MODULEMESH_WATCH_NAMESPACES"] == f"{release.watched[0]},{extra_ns}"
        deployment = release.deployment()
        assert deployment["metadata"]["generation"] > generation
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
            "localhost/modulemesh:dev"  # --reuse-values kept the install's values
        )
        # the newly watched namespace got its Role; the SA can now work there
        assert release.can_i("create", "deployments.apps", extra_ns)
        assert not release.can_i("get", "secrets", extra_ns)
        history = json.loads(
            cluster.helm("history", release.name, "-n", release.namespace, "-o", "json").stdout
        )
        assert [h["revision"] for h in history] == [1, 2]
        config = cluster.kubectl_json(
            "get", "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION
        )
        hooks = {h["name"]: h for h in config["webhooks"]}
        assert hooks["modulegraphs.modulemesh.io"]["clientConfig"]["caBundle"] == bundle
        assert hooks["modulegraphs.modulemesh.io"]["namespaceSelector"]["matchExpressions"][0][
            "values"
        ] == sorted([release.watched[0], extra_ns])
        # Helm does not touch CRDs on upgrade ...
        assert crd_state(cluster) == before_crds
        # ... so they are upgraded as documented: server-side apply of the chart's crds/.
        # Stand in for an older CRD: change what the new chart's CRD says, then upgrade it.
        cluster.kubectl(
            "patch",
            "crd",
            CRDS[0],
            "--type=json",
            "-p",
            json.dumps(
                [
                    {
                        "op": "replace",
                        "path": "/spec/versions/0/additionalPrinterColumns/0/description",
                        "value": "old chart",
                    }
                ]
            ),
        )
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART_CRDS))
        shipped = yaml.safe_load((CHART_CRDS / f"{CRDS[0]}.yaml").read_text())
        live = cluster.kubectl_json("get", "crd", CRDS[0])
        column = live["spec"]["versions"][0]["additionalPrinterColumns"][0]
        assert column.get("description") == shipped["spec"]["versions"][0][
            "additionalPrinterColumns"
        ][0].get("description")
        assert live["spec"]["versions"][0]["schema"] == shipped["spec"]["versions"][0]["schema"]

    def test_helm_uninstall_keeps_crds_and_graphs(self, release: Release) -> None:
        cluster = release.cluster
        ns = release.watched[0]
        cluster.helm(
            "uninstall", release.name, "-n", release.namespace, "--wait", "--timeout", "120s"
        )
        gone = [
            ("-n", release.namespace, "deployment", release.fullname),
            ("-n", release.namespace, "serviceaccount", release.fullname),
            ("-n", ns, "role", release.fullname),
            ("-n", ns, "rolebinding", release.fullname),
            ("clusterrole", f"{release.fullname}-discovery"),
            ("clusterrolebinding", f"{release.fullname}-discovery"),
            ("validatingwebhookconfiguration", WEBHOOK_CONFIGURATION),
        ]
        for args in gone:
            proc = cluster.kubectl("get", *args, check=False)
            assert proc.returncode != 0 and "NotFound" in proc.stderr, args
        for extra_ns in release.extra_namespaces:
            role = cluster.kubectl("-n", extra_ns, "get", "role", release.fullname, check=False)
            assert role.returncode != 0 and "NotFound" in role.stderr, extra_ns
        assert not release.can_i("create", "deployments.apps", ns)
        # CRDs (crds/ is never deleted by Helm) and the graphs in them stay.
        for crd in CRDS:
            cluster.kubectl("get", "crd", crd)
        graph = cluster.kubectl_json("-n", ns, "get", "mg", "quickstart")
        assert not graph["metadata"].get("finalizers")
        # With no operator left, a graph still deletes at once (no finalizer), and the garbage
        # collector takes its children with it (ownerReferences).
        cluster.kubectl("-n", ns, "delete", "mg", "quickstart", "--wait=true", "--timeout=30s")
        wait_until(
            lambda: (
                not cluster.kubectl_json(
                    "-n", ns, "get", "deployments", "-l", "modulemesh.io/graph=quickstart"
                )["items"]
            ),
            timeout=60,
            message="quickstart's Deployments collected with it",
        )


def test_cluster_wide_release_rbac(cluster: Cluster) -> None:
    """Without watchNamespaces: a ClusterRole, so every namespace, still no Secrets."""
    namespace = cluster.create_namespace("mm-wide", labels=RESTRICTED)
    rel = Release(cluster, f"mmw-{uuid.uuid4().hex[:6]}", namespace, ())
    try:
        helm_install(cluster, rel.name, namespace, wait=False)
        for ns in ("default", namespace, "kube-system"):
            assert rel.can_i("create", "deployments.apps", ns), ns
            assert rel.can_i("watch", "modulegraphs.modulemesh.io", ns), ns
            assert not rel.can_i("get", "secrets", ns), ns
            assert not rel.can_i("create", "pods", ns), ns
        assert rel.can_i("watch", "pods", None)  # cluster-wide watches
        assert not rel.can_i("list", "secrets", None)
        assert not rel.can_i("list", "namespaces", None)  # not needed cluster-wide
        roles = cluster.kubectl_json("get", "clusterrole", rel.fullname)
        for rule in roles["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
    finally:
        cluster.helm("uninstall", rel.name, "-n", namespace, "--ignore-not-found", check=False)
        cluster.delete_namespace(namespace)
