"""The few Kubernetes API calls the operator makes, on plain JSON dicts.

Objects stay the API's own camelCase JSON (as kopf hands them over and as render produces
them), so nothing is converted back and forth. Children are written with server-side apply
under one field manager, which makes reconciling idempotent and corrects drift: a field that
someone else changed is taken back on the next apply (``force=true``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modulemesh.operator.naming import graph_selector

FIELD_MANAGER = "modulemesh-operator"
GROUP = "modulemesh.io"
VERSION = "v1alpha1"


@dataclass(frozen=True, slots=True)
class Kind:
    """Where a kind lives in the REST API."""

    api_version: str
    plural: str
    kind: str

    def collection(self, namespace: str) -> str:
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{prefix}/namespaces/{namespace}/{self.plural}"

    def cluster_path(self, name: str) -> str:
        """The path of one cluster-scoped object of this kind."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{prefix}/{self.plural}/{name}"


CHILD_KINDS: dict[str, Kind] = {
    "Deployment": Kind("apps/v1", "deployments", "Deployment"),
    "Service": Kind("v1", "services", "Service"),
    "ConfigMap": Kind("v1", "configmaps", "ConfigMap"),
    "NetworkPolicy": Kind("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy"),
    "PodDisruptionBudget": Kind("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    "ServiceAccount": Kind("v1", "serviceaccounts", "ServiceAccount"),
    "Role": Kind("rbac.authorization.k8s.io/v1", "roles", "Role"),
    "RoleBinding": Kind("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
}
"""The kinds the operator owns, in the order they are applied (config before consumers)."""

APPLY_ORDER = (
    "ConfigMap",
    "Service",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Deployment",
)

POD = Kind("v1", "pods", "Pod")
NODES = Kind("v1", "nodes", "Node")
EVENTS = Kind("v1", "events", "Event")
VALIDATING_WEBHOOKS = Kind(
    "admissionregistration.k8s.io/v1",
    "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
)
GRAPHS = Kind(f"{GROUP}/{VERSION}", "modulegraphs", "ModuleGraph")
GATES = Kind(f"{GROUP}/{VERSION}", "privacygates", "PrivacyGate")


class KubeError(RuntimeError):
    """An API call failed; ``status`` is the HTTP status (0 when none was received)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class KubeConfigError(RuntimeError):
    """No usable credentials; the message names every source tried and why each failed."""


def load_config(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client from in-cluster config, else ``kubeconfig`` / ``$KUBECONFIG`` /
    ``~/.kube/config``.

    Raises :class:`KubeConfigError` with one line naming both attempts, so a command can say
    what is missing instead of the client library's (or kopf's) traceback.
    """
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    except config.ConfigException as error:
        in_cluster = (
            f"in-cluster config: {error}"
            if os.environ.get("KUBERNETES_SERVICE_HOST")
            else "not in a cluster (KUBERNETES_SERVICE_HOST is not set)"
        )
    path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    files = [os.path.expanduser(p) for p in path.split(os.pathsep) if p]
    if not any(os.path.exists(f) for f in files):
        reason = "no such file"
    else:
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path, client_configuration=configuration
            )
            return client.ApiClient(configuration)
        except Exception as error:  # ConfigException, OSError, TypeError, YAML errors, ...
            reason = " ".join(str(error).split()) or type(error).__name__
    raise KubeConfigError(
        f"no usable Kubernetes credentials: {in_cluster}; kubeconfig {path}: {reason}"
    )


class Kube:
    """Typed-enough access to the REST API, returning JSON dicts."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        method_, url, headers, body_, post = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(
                method_,
                url,
                header_params=headers,
                body=body_,
                post_params=post,
                _request_timeout=30,
            )
            raw = response.read()  # type: ignore[no-untyped-call]
        except ApiException as error:
            raise KubeError(error.status or 0, _api_message(error.body, error.reason)) from error
        if not 200 <= response.status < 300:
            raise KubeError(response.status, _api_message(raw, response.reason))
        decoded: dict[str, Any] = json.loads(raw) if raw else {}
        return decoded

    def apply(
        self, obj: Mapping[str, Any], *, force: bool = True, dry_run: bool = False
    ) -> dict[str, Any]:
        """Server-side apply a child ``obj`` under the operator's field manager; ``dry_run``
        returns what it would become (its ``managedFields`` included) without writing it."""
        kind = CHILD_KINDS[str(obj["kind"])]
        meta = obj["metadata"]
        path = f"{kind.collection(str(meta['namespace']))}/{meta['name']}"
        return self._apply(path, obj, force, dry_run=dry_run)

    def create(self, kind: Kind, namespace: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create one object of ``kind`` in ``namespace`` (e.g. an Event)."""
        return self._call("POST", kind.collection(namespace), body=dict(obj))

    def get_cluster_scoped(self, kind: Kind, name: str) -> dict[str, Any] | None:
        """One cluster-scoped object, or None when it does not exist."""
        try:
            return self._call("GET", kind.cluster_path(name))
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    def patch_cluster_scoped(
        self, kind: Kind, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Strategic-merge-patch one existing cluster-scoped object: lists with a merge key
        (a webhook configuration's ``webhooks``, by name) merge item by item, so the patch
        changes only the fields it names."""
        return self._call(
            "PATCH",
            kind.cluster_path(name),
            query=[("fieldManager", FIELD_MANAGER)],
            body=dict(patch),
            content_type="application/strategic-merge-patch+json",
        )

    def _apply(
        self, path: str, obj: Mapping[str, Any], force: bool = True, *, dry_run: bool = False
    ) -> dict[str, Any]:
        query = [("fieldManager", FIELD_MANAGER)]
        if force:
            query.append(("force", "true"))
        if dry_run:
            query.append(("dryRun", "All"))
        return self._call(
            "PATCH", path, query=query, body=dict(obj), content_type="application/apply-patch+yaml"
        )

    def items(
        self, kind: Kind, namespace: str, *, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every object of ``kind`` in ``namespace`` matching ``labels``."""
        items: list[dict[str, Any]] = self._call(
            "GET", kind.collection(namespace), query=_selector(labels)
        ).get("items", [])
        for item in items:
            item.setdefault("kind", kind.kind)
            item.setdefault("apiVersion", kind.api_version)
        return items

    def list_all(
        self, kind: Kind, *, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every object of ``kind`` in every namespace (matching ``labels``)."""
        prefix = "/api/v1" if kind.api_version == "v1" else f"/apis/{kind.api_version}"
        query = _selector(labels)
        items: list[dict[str, Any]] = self._call("GET", f"{prefix}/{kind.plural}", query=query).get(
            "items", []
        )
        return items

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        try:
            return self._call("GET", f"{kind.collection(namespace)}/{name}")
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        """Delete one object (children with it, in the background); absent is fine."""
        try:
            self._call(
                "DELETE",
                f"{kind.collection(namespace)}/{name}",
                body={"propagationPolicy": "Background"},
            )
        except KubeError as error:
            if error.status != 404:
                raise

    def patch_status(
        self, kind: Kind, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the status subresource; return the object as it now is."""
        return self._call(
            "PATCH",
            f"{kind.collection(namespace)}/{name}/status",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    def replace_spec(
        self, kind: Kind, namespace: str, name: str, spec: Mapping[str, Any], generation: int
    ) -> dict[str, Any]:
        """Replace the object's whole ``spec`` if it is still at ``generation`` (a JSON patch
        with a test: a merge patch would keep fields the new spec leaves out, and a change
        made meanwhile is refused with 422 rather than overwritten)."""
        ops = [
            {"op": "test", "path": "/metadata/generation", "value": generation},
            {"op": "replace", "path": "/spec", "value": dict(spec)},
        ]
        return self._call(
            "PATCH",
            f"{kind.collection(namespace)}/{name}",
            query=[("fieldManager", "modulemesh-rollback")],
            body=ops,
            content_type="application/json-patch+json",
        )

    def owned_children(self, namespace: str, graph: str) -> Iterator[dict[str, Any]]:
        """Every object the operator manages for ``graph``, of every child kind."""
        labels = graph_selector(graph)
        for name in APPLY_ORDER:
            yield from self.items(CHILD_KINDS[name], namespace, labels=labels)


def _selector(labels: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """The ``labelSelector`` query of a LIST (none without labels)."""
    if not labels:
        return []
    return [("labelSelector", ",".join(f"{k}={v}" for k, v in labels.items()))]


def _api_message(body: Any, reason: Any) -> str:
    """The API's Status message, else the HTTP reason."""
    try:
        decoded = json.loads(body or b"{}")
        return str(decoded.get("message") or reason)
    except (ValueError, AttributeError, TypeError):
        return str(reason)
