"""kopf handlers: when to reconcile, and what to tell people (Events) when things change.

The work itself is :class:`~modulemesh.operator.reconcile.Reconciler`; this module only wires
it to kopf. Every reconcile of a graph runs under that graph's lock, so a spec change, a drift
event and a timer never apply the same graph concurrently.

Triggers:
- a graph is created, its spec changes, or the operator (re)starts: full reconcile;
- a PrivacyGate changes: full reconcile of every graph that names it (found by a kopf index);
- a graph is created, changed or deleted: the gates it names (or named) list it, or not, in
  their status (graphs, graphCount);
- with the webhook on: creates and updates of graphs and gates are checked at admission,
  and a gate change also against the graphs that name it (warned, or refused when strict);
- an owned child is deleted, or someone else changed or removed a field the operator applied
  (its field set no longer matches, see :mod:`~modulemesh.operator.drift`): full reconcile of
  its graph, which applies only the children that need it; foreign fields (an annotation
  added by hand, a rollout restart) are not drift;
- an owned Deployment or a graph's Pod changes: status refresh (no apply);
- one operator-wide loop: read each graph's router ``/envelopes`` and refresh status; every
  ``resyncInterval`` a full reconcile as a safety net. (Not a kopf timer: timers put a finalizer
  on every graph; this operator puts none, so graphs stay deletable without it.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import httpx
import kopf

from modulemesh.api import PrivacyGate
from modulemesh.operator.config import OperatorSettings
from modulemesh.operator.drift import drift
from modulemesh.operator.events import events_for, post_events
from modulemesh.operator.kube import (
    GATES,
    GRAPHS,
    GROUP,
    VERSION,
    Kube,
    KubeError,
    load_config,
)
from modulemesh.operator.naming import (
    GRAPH_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    MAX_NAME,
    short_name,
)
from modulemesh.operator.observe import parse_envelopes
from modulemesh.operator.reconcile import Outcome, Reconciler
from modulemesh.operator.webhook import (
    gate_admission_handler,
    graph_admission_handler,
    keep_ca_bundle,
    webhook_server,
)

log = logging.getLogger("modulemesh.operator")

SETTINGS = OperatorSettings.from_env()
"""Read once at import: kopf needs timer intervals when the handlers are registered."""

MANAGED = {MANAGED_BY_LABEL: MANAGED_BY_VALUE}

_locks: dict[tuple[str, str], asyncio.Lock] = {}
_envelopes: dict[tuple[str, str], tuple[dict[str, Any] | None, str | None]] = {}
_last_resync: dict[tuple[str, str], float] = {}
_reconciler: Reconciler | None = None
_known: set[tuple[str, str]] = set()
"""Graphs seen by create/update/resume and not deleted since: what the refresh loop visits."""
_background: list[asyncio.Task[None]] = []


def reconciler() -> Reconciler:
    """The process-wide reconciler (created on first use, after settings are final)."""
    global _reconciler
    if _reconciler is None:
        _reconciler = Reconciler(Kube(load_config(SETTINGS.kubeconfig)), SETTINGS)
    return _reconciler


def _lock(namespace: str, name: str) -> asyncio.Lock:
    return _locks.setdefault((namespace, name), asyncio.Lock())


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Keep kopf's own bookkeeping out of ``status`` (ours alone) and name the field manager."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modulemesh.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="modulemesh.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.execution.max_workers = 16
    settings.networking.request_timeout = 60
    loop = asyncio.get_running_loop()
    _background.append(loop.create_task(refresh_loop(SETTINGS.envelope_interval_s)))
    hook = SETTINGS.webhook
    if hook is not None:
        settings.admission.server, ca_file = webhook_server(hook)
        _background.append(loop.create_task(keep_ca_bundle(reconciler().kube, hook, ca_file)))


@kopf.on.cleanup()
async def stop_background(**_: Any) -> None:
    """Stop the refresh loop when the operator stops."""
    for task in _background:
        task.cancel()
    await asyncio.gather(*_background, return_exceptions=True)
    _background.clear()


async def reconcile_named(
    namespace: str,
    name: str,
    *,
    apply: bool,
    body: Mapping[str, Any] | None = None,
    announce: bool = True,
) -> Outcome | None:
    """Reconcile one graph under its lock; ``body`` is fetched fresh when not given.

    ``announce=False`` (the periodic resync) posts a Reconciled event only if it pruned
    something, so a quiet graph does not collect an event every resync.
    """
    async with _lock(namespace, name):
        rec = reconciler()
        if body is None or not apply:
            body = await asyncio.to_thread(rec.kube.get, GRAPHS, namespace, name)
            if body is None:
                return None
        envelopes, error = _envelopes.get((namespace, name), (None, None))
        outcome = await asyncio.to_thread(
            rec.reconcile, body, apply=apply, envelopes=envelopes, envelope_error=error
        )
        if apply:
            _last_resync[(namespace, name)] = time.monotonic()
        await _post_events(body, outcome, applied=apply and (announce or bool(outcome.pruned)))
        return outcome


async def _post_events(body: Mapping[str, Any], outcome: Outcome, *, applied: bool) -> None:
    """Post the Events the reconcile deserves with the operator's own client: this works from
    the refresh loop too, where ``kopf.event`` has no event queue."""
    events = events_for(outcome, applied=applied)
    if events:
        await asyncio.to_thread(post_events, reconciler().kube, body, events)


# --- graphs ------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "modulegraphs")
@kopf.on.create(GROUP, VERSION, "modulegraphs")
@kopf.on.update(GROUP, VERSION, "modulegraphs", field="spec")
async def graph_changed(
    body: kopf.Body, name: str, namespace: str | None, old: Any = None, **kwargs: Any
) -> None:
    """A graph appeared, changed, or the operator started: make its children match."""
    _known.add((str(namespace), name))
    await reconcile_named(str(namespace), name, apply=True, body=dict(body))
    named = set(body.get("spec", {}).get("gates") or [])
    if isinstance(old, Mapping):  # an update: gates it no longer names lose it too
        named |= set(old.get("gates") or [])
    await refresh_gate_graphs(str(namespace), named, kwargs["graphs_by_gate"])


@kopf.on.event(GROUP, VERSION, "modulegraphs")
async def graph_event(
    event: kopf.RawEvent, name: str, namespace: str | None, **kwargs: Any
) -> None:
    """A graph deleted: forget what we cached, and the gates it named no longer list it.

    (A watch event, not ``on.delete``: the operator puts no finalizer on graphs, so a delete
    handler would not be called.)
    """
    if event["type"] != "DELETED":
        return
    key = (str(namespace), name)
    _known.discard(key)
    for cache in (_locks, _envelopes, _last_resync):
        cache.pop(key, None)
    named = set((event["object"].get("spec") or {}).get("gates") or [])
    await refresh_gate_graphs(str(namespace), named, kwargs["graphs_by_gate"])


@kopf.index(GROUP, VERSION, "modulegraphs")
def graphs_by_gate(
    name: str, namespace: str | None, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], str]:
    """``(namespace, gate) -> graph`` for every gate a graph names."""
    return {(str(namespace), str(gate)): name for gate in spec.get("gates", []) or []}


async def refresh_loop(interval: float) -> None:
    """Every ``interval`` s: read each known graph's router envelopes into its status, and
    re-apply graphs whose last apply is older than the resync interval.

    One operator-wide loop rather than a kopf timer per graph: kopf puts a finalizer on every
    object with a timer, which would leave graphs undeletable once the operator is uninstalled.
    """
    limit = asyncio.Semaphore(8)

    async def one(namespace: str, name: str) -> None:
        async with limit:
            try:
                rec = reconciler()
                body = await asyncio.to_thread(rec.kube.get, GRAPHS, namespace, name)
                if body is None:
                    _known.discard((namespace, name))
                    return
                endpoint = (body.get("status") or {}).get("endpoint")
                _envelopes[(namespace, name)] = await fetch_envelopes(endpoint)
                last = _last_resync.get((namespace, name), 0.0)
                due = time.monotonic() - last >= SETTINGS.resync_interval_s
                await reconcile_named(namespace, name, apply=due, body=body, announce=False)
            except Exception:  # one graph's trouble must not stop the others' refresh
                log.exception("refreshing ModuleGraph %s/%s failed", namespace, name)

    while True:
        await asyncio.sleep(interval)
        await asyncio.gather(*(one(ns, name) for ns, name in sorted(_known)))


async def fetch_envelopes(endpoint: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The router's ``GET /envelopes`` as ``module -> envelope``, or None and why not."""
    if not endpoint:
        return None, "router endpoint not known yet"
    url = endpoint.rstrip("/") + "/envelopes"
    try:
        async with httpx.AsyncClient(timeout=ENVELOPE_TIMEOUT_S) as client:
            response = await client.get(url)
    except httpx.HTTPError as error:
        return None, envelope_fetch_error(url, error)
    if response.status_code != 200:
        return None, (
            f"router envelopes unreachable at {url}: the router answered HTTP "
            f"{response.status_code}; check the router pods' logs and that they run the "
            "operator's version"
        )
    try:
        modules = parse_envelopes(response.json())
    except ValueError:
        modules = None
    if modules is None:
        return None, (
            f"router envelopes at {url} are not in the expected form (JSON with a "
            "'modules' map); check that the router runs the operator's version"
        )
    return modules, None


ENVELOPE_TIMEOUT_S = 3.0


def envelope_fetch_error(url: str, error: httpx.HTTPError) -> str:
    """Why the router's envelopes could not be read: the address tried, what failed, and
    what to check (the status shows this in ``Degraded`` and per module)."""
    detail = " ".join(str(error).split())
    cause: BaseException | None = error
    while cause is not None:  # httpx says "All connection attempts failed"; the OS says why
        if isinstance(cause, OSError) and (cause.errno or cause.strerror):
            code = cause.errno
            detail = os.strerror(code) if code is not None and code > 0 else str(cause.strerror)
            break
        cause = cause.__cause__ or cause.__context__
    what = error.__class__.__name__ + (f" ({detail})" if detail else "")
    if isinstance(error, httpx.TimeoutException):
        what += f" after {ENVELOPE_TIMEOUT_S:g}s"
    host = httpx.URL(url).host
    return (
        f"router envelopes unreachable at {url}: {what}; check that the graph's router pods "
        f"are Ready and that {host} resolves and is reachable from where the operator runs "
        "(its Service's DNS name from inside the cluster; a NetworkPolicy may block the "
        "operator's namespace)"
    )


# --- gates -------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "privacygates")
@kopf.on.create(GROUP, VERSION, "privacygates")
@kopf.on.update(GROUP, VERSION, "privacygates", field="spec")
@kopf.on.delete(GROUP, VERSION, "privacygates", optional=True)
async def gate_changed(name: str, namespace: str | None, meta: kopf.Meta, **kwargs: Any) -> None:
    """Re-reconcile every graph that names this gate (affinity, clearance, compliance)."""
    namespace = str(namespace)
    listing = _graphs_naming(namespace, name, kwargs["graphs_by_gate"])
    for graph in listing["graphs"]:
        await reconcile_named(namespace, graph, apply=True)
    spec = kwargs.get("spec") or {}
    await _patch_gate_status(namespace, name, {
        "observedGeneration": meta.get("generation"),
        "tags": ",".join(str(tag.get("name")) for tag in spec.get("tags") or []),
        **listing,
    })  # fmt: skip


async def refresh_gate_graphs(
    namespace: str, gates: set[str], index: kopf.Index[tuple[str, str], str]
) -> None:
    """Bring the named gates' ``graphs``/``graphCount`` in line with the graphs naming them."""
    for gate in sorted(gates):
        await _patch_gate_status(namespace, gate, _graphs_naming(namespace, gate, index))


def _graphs_naming(
    namespace: str, gate: str, index: kopf.Index[tuple[str, str], str]
) -> dict[str, Any]:
    """The gate's ``graphs`` and ``graphCount`` status fields, from the kopf index."""
    graphs = sorted(set(index.get((namespace, gate), [])))
    return {"graphs": graphs, "graphCount": len(graphs)}


async def _patch_gate_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    try:
        await asyncio.to_thread(reconciler().kube.patch_status, GATES, namespace, name, status)
    except KubeError as error:
        if error.status != 404:  # a gate not applied (yet), or deleted meanwhile
            raise


# --- owned children ----------------------------------------------------------------------


async def graph_of(namespace: str, obj: Mapping[str, Any], label: str | None) -> str | None:
    """The graph an owned object or pod belongs to.

    The owner reference names it exactly; pods (owned by ReplicaSets) carry only the graph
    label, which is the graph's name unless that is longer than 63 characters: then it is the
    cut-and-hashed :func:`~modulemesh.operator.naming.short_name`, matched against the graphs
    in the namespace.
    """
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "ModuleGraph" and str(ref.get("apiVersion", "")).startswith(
            f"{GROUP}/"
        ):
            return str(ref["name"])
    if not label or len(label) < MAX_NAME:
        return label or None
    graphs = await asyncio.to_thread(reconciler().kube.items, GRAPHS, namespace)
    names = (str(g["metadata"]["name"]) for g in graphs)
    return next((name for name in names if short_name(name) == label), None)


async def _child_event(event: Mapping[str, Any], namespace: str, labels: Mapping[str, str]) -> None:
    graph = await graph_of(namespace, event.get("object") or {}, labels.get(GRAPH_LABEL))
    if not graph:
        return
    obj = event.get("object") or {}
    why = "deleted" if event.get("type") == "DELETED" else drift(obj)
    if why is not None:
        meta = obj.get("metadata") or {}
        log.info(
            "%s %s/%s drifted (%s): reconciling", obj.get("kind"), namespace, meta.get("name"), why
        )
    await reconcile_named(namespace, graph, apply=why is not None)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event("", "v1", "configmaps", labels=MANAGED)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=MANAGED)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
async def child_changed(
    event: kopf.RawEvent, namespace: str | None, labels: kopf.Labels, **_: Any
) -> None:
    """A child changed: correct drift when someone else did it, else refresh status."""
    if event.get("type") is None:  # the initial listing, already covered by resume
        return
    await _child_event(event, str(namespace), labels)


@kopf.on.event("", "v1", "pods", labels={GRAPH_LABEL: kopf.PRESENT, **MANAGED})
async def pod_changed(
    event: kopf.RawEvent, namespace: str | None, labels: kopf.Labels, **_: Any
) -> None:
    """Pods carry scheduling problems and readiness: refresh the graph's status."""
    if event.get("type") is None:
        return
    graph = await graph_of(str(namespace), event.get("object") or {}, labels.get(GRAPH_LABEL))
    if graph:
        await reconcile_named(str(namespace), graph, apply=False)


# --- admission (only with the webhook on) ----------------------------------------------------


def _graph_bodies(namespace: str) -> list[dict[str, Any]]:
    """The namespace's ModuleGraph objects, for checking a PrivacyGate change against them."""
    return list(reconciler().kube.items(GRAPHS, namespace))


def _namespace_gates(namespace: str) -> list[PrivacyGate]:
    return reconciler().gates(namespace)


validate_graph_admission = graph_admission_handler(
    _namespace_gates, SETTINGS.render.default_namespace, SETTINGS.watch_namespaces
)
"""Refuse a ModuleGraph the reconciler would report as invalid, naming each field."""
validate_gate_admission = gate_admission_handler(
    _graph_bodies,
    _namespace_gates,
    SETTINGS.render.default_namespace,
    SETTINGS.watch_namespaces,
    strict=SETTINGS.webhook is not None and SETTINGS.webhook.strict_gates,
)
"""Refuse a PrivacyGate with semantic errors; warn (strict: refuse) when the change makes a
graph naming it non-compliant."""


if SETTINGS.webhook is not None:
    _ignore = SETTINGS.webhook.failure_policy == "Ignore"
    for _plural, _handler in (
        ("modulegraphs", validate_graph_admission),
        ("privacygates", validate_gate_admission),
    ):
        kopf.on.validate(
            GROUP,
            VERSION,
            _plural,
            id=_plural,
            operations=["CREATE", "UPDATE"],
            ignore_failures=_ignore,
        )(_handler)
