"""Least-privilege RBAC: exactly what the operator uses, no wildcards, no Secrets.

Cluster-wide by default (one ClusterRole); with `watchNamespaces` a Role and RoleBinding in each
watched namespace and no namespaced permissions cluster-wide. Either way a small ClusterRole
lets kopf read CRDs (and, for a namespace list, the namespaces), the operator list nodes (their
sizes, to say what would fit an unschedulable pod; nothing else on nodes) and, with the admission webhook
on, get and patch the chart's ValidatingWebhookConfiguration by name (its CA bundle) and create
none: a compromised operator cannot register a webhook that sees other objects. It creates
ServiceAccounts, Roles and RoleBindings (a differentially private graph's router gets one of
each for its budget ledger) without escalate or bind, so it can grant no more than it holds. The e2e test
(tests/e2e/test_helm.py) proves the same rules are sufficient against a real API server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from chart.helm import NAMESPACE, RELEASE, Helm, by_kind

FULLNAME = f"{RELEASE}-modulemesh"
SA = {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
WRITE = ["get", "list", "watch", "create", "patch", "delete"]

# (apiGroup, resource) -> verbs: what the operator's code and kopf call (modulemesh/operator).
NAMESPACED_RULES: dict[tuple[str, str], list[str]] = {
    ("modulemesh.io", "modulegraphs"): ["get", "list", "watch", "patch"],
    ("modulemesh.io", "privacygates"): ["get", "list", "watch", "patch"],
    ("modulemesh.io", "modulegraphs/status"): ["get", "patch"],
    ("modulemesh.io", "privacygates/status"): ["get", "patch"],
    ("modulemesh.io", "modulegraphs/finalizers"): ["update"],
    ("apps", "deployments"): WRITE,
    ("", "services"): WRITE,
    # update: the operator grants DP routers update on their ledger ConfigMap (RBAC escalation
    # prevention: it can only grant what it holds).
    ("", "configmaps"): [*WRITE, "update"],
    ("", "serviceaccounts"): WRITE,
    ("rbac.authorization.k8s.io", "roles"): WRITE,
    ("rbac.authorization.k8s.io", "rolebindings"): WRITE,
    ("networking.k8s.io", "networkpolicies"): WRITE,
    ("policy", "poddisruptionbudgets"): WRITE,
    ("", "pods"): ["get", "list", "watch"],
    ("", "events"): ["create", "patch"],
    ("events.k8s.io", "events"): ["create", "patch"],
}
CRD_READ = {("apiextensions.k8s.io", "customresourcedefinitions"): ["get", "list", "watch"]}
NAMESPACE_READ = {("", "namespaces"): ["get", "list", "watch"]}
# Node sizes, so an unschedulable pod's condition can say what would fit (list only).
NODE_READ = {("", "nodes"): ["list"]}
WEBHOOK_CONFIG = {
    # The chart's own configuration, by name only: no create, so no webhook of its own.
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations#modulemesh.io"): [
        "get",
        "patch",
    ],
}


def flatten(rules: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """Rules as (group, resource) -> sorted verbs; a pair granted twice is an error.

    A rule limited to named objects is keyed ``resource#name,...``.
    """
    out: dict[tuple[str, str], list[str]] = {}
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule  # no URLs
        names = ",".join(rule.get("resourceNames") or [])
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = (group, f"{resource}#{names}" if names else resource)
                assert key not in out, f"{group}/{key[1]} granted twice"
                out[key] = sorted(rule["verbs"])
    return out


def expected(rules: Mapping[tuple[str, str], list[str]]) -> dict[tuple[str, str], list[str]]:
    return {key: sorted(verbs) for key, verbs in rules.items()}


def roles(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return by_kind(objects, "ClusterRole") + by_kind(objects, "Role")


@pytest.mark.parametrize(
    "values_files", [[], ["watch-namespaces.yaml"]], ids=["cluster-wide", "namespaced"]
)
class TestNoWildcardsNoSecrets:
    def test_no_wildcards(self, helm: Helm, values_files: list[str]) -> None:
        for role in roles(helm.render(values_files)):
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[field], (role["metadata"]["name"], rule)
                    assert not any("*" in item for item in rule[field] if item), rule

    def test_no_secrets_and_no_escalation(self, helm: Helm, values_files: list[str]) -> None:
        forbidden_resources = {
            "secrets",
            # serviceaccounts, roles and rolebindings are granted (a DP router's ledger access),
            # but without escalate or bind: the API server lets the operator grant only what
            # it holds itself, and no token of any account.
            "serviceaccounts/token",
            "clusterroles",
            "clusterrolebindings",
            "pods/exec",
            "pods/attach",
            "pods/portforward",
            "nodes/proxy",
            "persistentvolumes",
            "leases",
        }
        forbidden_verbs = {"escalate", "bind", "impersonate", "deletecollection"}
        for role in roles(helm.render(values_files)):
            for (group, resource), verbs in flatten(role["rules"]).items():
                assert resource not in forbidden_resources, (role["metadata"]["name"], resource)
                assert not forbidden_verbs & set(verbs), (group, resource, verbs)

    def test_pods_are_read_only(self, helm: Helm, values_files: list[str]) -> None:
        for role in roles(helm.render(values_files)):
            verbs = flatten(role["rules"]).get(("", "pods"))
            if verbs is not None:
                assert verbs == ["get", "list", "watch"]


def test_cluster_wide_grants_exactly_what_the_operator_uses(helm: Helm) -> None:
    objects = helm.render()
    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")
    cluster_roles = {r["metadata"]["name"]: r for r in by_kind(objects, "ClusterRole")}
    assert set(cluster_roles) == {FULLNAME, f"{FULLNAME}-discovery"}
    assert flatten(cluster_roles[FULLNAME]["rules"]) == expected(NAMESPACED_RULES)
    # Watching every namespace, kopf needs no namespace list: none is granted.
    discovery = flatten(cluster_roles[f"{FULLNAME}-discovery"]["rules"])
    assert discovery == expected({**CRD_READ, **NODE_READ, **WEBHOOK_CONFIG})
    bindings = {b["metadata"]["name"]: b for b in by_kind(objects, "ClusterRoleBinding")}
    assert set(bindings) == set(cluster_roles)
    for name, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": name,
        }
        assert binding["subjects"] == [SA]


def test_watched_namespaces_get_a_role_each_and_nothing_cluster_wide(helm: Helm) -> None:
    objects = helm.render(["watch-namespaces.yaml"])
    role_list = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in role_list) == ["team-a", "team-b"]
    for role in role_list:
        assert role["metadata"]["name"] == FULLNAME
        assert flatten(role["rules"]) == expected(NAMESPACED_RULES)
    role_bindings = by_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in role_bindings) == ["team-a", "team-b"]
    for binding in role_bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == FULLNAME
        assert binding["subjects"] == [SA]  # the SA lives in the release namespace
    # Cluster-wide: only the discovery reads; namespaces so kopf notices one created later.
    (cluster_role,) = by_kind(objects, "ClusterRole")
    assert cluster_role["metadata"]["name"] == f"{FULLNAME}-discovery"
    assert flatten(cluster_role["rules"]) == expected(
        {**CRD_READ, **NODE_READ, **NAMESPACE_READ, **WEBHOOK_CONFIG}
    )


def test_without_the_webhook_no_webhook_configuration_access(helm: Helm) -> None:
    objects = helm.render(set_values={"webhook.enabled": "false"})
    (discovery,) = [
        r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith("-discovery")
    ]
    assert flatten(discovery["rules"]) == expected({**CRD_READ, **NODE_READ})


def test_rbac_create_false_renders_no_rbac(helm: Helm) -> None:
    objects = helm.render(["existing-serviceaccount.yaml"])
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"):
        assert not by_kind(objects, kind), kind
    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "modulemesh-operator"


def test_service_account_is_the_one_bound(helm: Helm) -> None:
    objects = helm.render(set_values={"serviceAccount.name": "mesh-operator"})
    (sa,) = by_kind(objects, "ServiceAccount")
    assert sa["metadata"] == {**sa["metadata"], "name": "mesh-operator", "namespace": NAMESPACE}
    for binding in by_kind(objects, "ClusterRoleBinding"):
        assert binding["subjects"] == [{**SA, "name": "mesh-operator"}]
    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "mesh-operator"
