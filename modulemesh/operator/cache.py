"""What the operator knows about the cluster, kept current by its watches (an informer cache).

A reconcile used to GET its graph and LIST the namespace's gates, the graph's children, pods
and Deployments on every child or pod event and every refresh: at 500 graphs that was minutes
of API traffic after everything was Ready. The operator already watches every kind it reads
(kopf's watches feed the handlers), so the handlers put each object they are told about here
and a reconcile reads from here instead; the startup lists each kind once to prime it.

Objects are kept slim, only the fields a reconcile reads (of ``managedFields`` the hash of the
operator's field set and the other writers' names, of pod specs the container resources), so memory per graph is bounded by
the graph's own children and pods, not by copies of whole objects per event. Writes the
operator makes (applies, status patches) are put back from the API's answer at once, so the
next reconcile does not see the state from before its own write. Last-writer order by
``resourceVersion``: an older copy (a watch's initial listing racing the priming list) never
replaces a newer one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from modulemesh.operator import drift
from modulemesh.operator.kube import APPLY_ORDER, FIELD_MANAGER
from modulemesh.operator.naming import GRAPH_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE

GRAPH_KIND = "ModuleGraph"
GATE_KIND = "PrivacyGate"
POD_KIND = "Pod"

Key = tuple[str, str]


def _rv(obj: Mapping[str, Any]) -> int | None:
    value = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _meta(obj: Mapping[str, Any], *, managed_fields: bool = False) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    keep = ("name", "namespace", "uid", "generation", "resourceVersion", "labels", "annotations")
    slim = {k: meta[k] for k in keep if k in meta}
    if "ownerReferences" in meta:
        slim["ownerReferences"] = meta["ownerReferences"]
    if managed_fields:  # drift reads the hash of the operator's field set, and who else wrote
        slim[drift.DIGEST_KEY] = drift.owned_digest(obj)
        slim["managedFields"] = [
            {"manager": e.get("manager")}
            for e in meta.get("managedFields") or []
            if e.get("manager") != FIELD_MANAGER
        ]
    return slim


def slim(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of ``obj`` a reconcile reads, for the kind it is."""
    out: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion"),
        "kind": kind,
        "metadata": _meta(obj, managed_fields=kind in APPLY_ORDER),
    }
    if kind in (GRAPH_KIND, GATE_KIND):
        out["spec"] = obj.get("spec") or {}
        if "status" in obj:
            out["status"] = obj["status"]
    elif kind == POD_KIND:
        containers = (obj.get("spec") or {}).get("containers") or []
        out["spec"] = {"containers": [{"resources": c.get("resources") or {}} for c in containers]}
        conditions = (obj.get("status") or {}).get("conditions") or []
        out["status"] = {
            "conditions": [
                {k: c[k] for k in ("type", "status", "reason", "message") if k in c}
                for c in conditions
            ]
        }
    elif kind == "Deployment":
        status = obj.get("status") or {}
        out["spec"] = {"replicas": (obj.get("spec") or {}).get("replicas")}
        out["status"] = {k: status[k] for k in ("readyReplicas", "replicas") if k in status}
    return out


class Cache:
    """Graphs, gates, the operator's children and the graphs' pods, by namespace and graph.

    Thread-safe: handlers write on the event loop, reconciles read in worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._graphs: dict[Key, dict[str, Any]] = {}
        self._gates: dict[Key, dict[str, Any]] = {}
        # (namespace, graph label) -> (kind, name) -> object
        self._owned: dict[Key, dict[Key, dict[str, Any]]] = {}
        self.primed: set[str] = set()
        """Kinds listed once at startup; until then a reconcile asks the API."""

    def ready(self, *kinds: str) -> bool:
        """Whether every one of ``kinds`` has been primed."""
        return all(k in self.primed for k in kinds)

    def prime(self, kind: str, objects: Iterable[Mapping[str, Any]]) -> None:
        """Put a startup listing of ``kind`` and mark it known."""
        for obj in objects:
            self.put(kind, obj)
        self.primed.add(kind)

    def _place(self, kind: str, obj: Mapping[str, Any]) -> tuple[dict[Any, Any], Key] | None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        if kind == GRAPH_KIND:
            return self._graphs, (namespace, name)
        if kind == GATE_KIND:
            return self._gates, (namespace, name)
        labels = meta.get("labels") or {}
        graph = labels.get(GRAPH_LABEL)
        if graph is None or labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
            return None
        return self._owned.setdefault((namespace, str(graph)), {}), (kind, name)

    def put(self, kind: str, obj: Mapping[str, Any]) -> None:
        """Record ``obj`` (a watch event's, a listing's or a write's answer) unless the cache
        already holds a newer version."""
        with self._lock:
            place = self._place(kind, obj)
            if place is None:
                return
            store, key = place
            old = store.get(key)
            new_rv, old_rv = _rv(obj), _rv(old) if old else None
            if old is not None and new_rv is not None and old_rv is not None and new_rv < old_rv:
                return
            store[key] = slim(kind, obj)

    def remove(self, kind: str, obj: Mapping[str, Any]) -> None:
        """Forget a deleted object (and, for a graph, nothing else: its children's own
        deletions arrive as events of their own)."""
        with self._lock:
            place = self._place(kind, obj)
            if place is None:
                return
            store, key = place
            store.pop(key, None)
            if kind not in (GRAPH_KIND, GATE_KIND):
                meta = obj.get("metadata") or {}
                owned_key = (
                    str(meta.get("namespace")),
                    str((meta.get("labels") or {})[GRAPH_LABEL]),
                )
                if not self._owned.get(owned_key):
                    self._owned.pop(owned_key, None)

    def set_status(self, namespace: str, name: str, status: Mapping[str, Any], rv: Any) -> None:
        """The graph's status as the operator just wrote it (the patch's answer)."""
        with self._lock:
            graph = self._graphs.get((namespace, name))
            if graph is not None:
                graph["status"] = dict(status)
                if rv is not None:
                    graph["metadata"]["resourceVersion"] = rv

    def graph(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._graphs.get((namespace, name))
            return dict(found) if found is not None else None

    def graphs(self, namespace: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(g) for (ns, _), g in self._graphs.items() if ns == namespace]

    def gates(self, namespace: str) -> list[dict[str, Any]]:
        with self._lock:
            return [g for (ns, _), g in sorted(self._gates.items()) if ns == namespace]

    def owned(self, namespace: str, graph_label: str, *kinds: str) -> list[dict[str, Any]]:
        """The graph's objects of ``kinds`` (its children, or its pods)."""
        with self._lock:
            objects = self._owned.get((namespace, graph_label), {})
            return [obj for (kind, _), obj in sorted(objects.items()) if kind in kinds]

    def sizes(self) -> dict[str, int]:
        """How many objects of each sort are held (for logs and the benchmark)."""
        with self._lock:
            return {
                "graphs": len(self._graphs),
                "gates": len(self._gates),
                "owned": sum(len(v) for v in self._owned.values()),
            }
