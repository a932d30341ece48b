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
import functools
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import kopf

from modulemesh.api import PrivacyGate
from modulemesh.operator.cache import GATE_KIND, GRAPH_KIND, POD_KIND, Cache
from modulemesh.operator.config import OperatorSettings
from modulemesh.operator.drift import drift
from modulemesh.operator.events import events_for, post_events
from modulemesh.operator.gate_status import ComplianceBook
from modulemesh.operator.kube import (
    APPLY_ORDER,
    CHILD_KINDS,
    GATES,
    GRAPHS,
    GROUP,
    POD,
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
from modulemesh.operator.rollout_events import rollout_events
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
_compliance = ComplianceBook()
"""What each graph's router replicas last reported about its gates (for gate status)."""
_gate_counts: dict[tuple[str, str], dict[str, Any]] = {}
"""The count fields last written to each gate's status, so unchanged ones are not rewritten."""


CACHE = Cache()
"""Graphs, gates, children and pods as the watches report them: what reconciles read."""
_applied_generation: dict[tuple[str, str], Any] = {}
"""The generation of each graph this process last reconciled (a new one is a spec change)."""
_spec_gates: dict[tuple[str, str], set[str]] = {}
"""The gates each graph's spec named when it was last reconciled (a change updates both)."""
_observed: dict[tuple[str, str], str | None] = {}
"""The envelope error each graph's status last showed (None: envelopes were read)."""
_pending: dict[tuple[str, str], asyncio.Task[None]] = {}
"""Status refreshes waiting out ``STATUS_DEBOUNCE_S``: one per graph however many events."""
STATUS_DEBOUNCE_S = 1.0
"""A graph's pods and Deployments change in bursts (a rollout, pods starting): one status
refresh after the burst instead of one per event."""
_status_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="status")
"""Threads for status-only reconciles (applies use the loop's default executor)."""
_resyncs: Counter[str] = Counter()
"""Graphs the refresh loop re-checked (``graphs``) and objects it applied (``applied``)."""
_http: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None


def http_client() -> httpx.AsyncClient:
    """One client for every router (per event loop): a client per request cost a TLS context
    each (about 10 ms of CPU), per graph per envelope interval."""
    global _http
    loop = asyncio.get_running_loop()
    if _http is None or _http[0] is not loop:
        _http = (loop, httpx.AsyncClient(timeout=ENVELOPE_TIMEOUT_S))
    return _http[1]


@dataclass
class _Failing:
    error: httpx.HTTPError
    streak: int
    retry_at: float


_failing: dict[str, _Failing] = {}
"""Router URLs whose last read failed: asked again after 1, 2, 4, then every 8 envelope
intervals, and meanwhile answered with the streak's first error (a router that is not there
does not change the status, so a thousand unreachable routers cost no lookups and no status
writes every interval)."""
MAX_BACKOFF = 8


async def get_router(url: str) -> httpx.Response:
    """GET ``url`` with the shared client, unless it failed recently (then its last error)."""
    now = time.monotonic()
    failing = _failing.get(url)
    if failing is not None and now < failing.retry_at:
        raise failing.error.with_traceback(None)  # no frames piling up on the kept error
    try:
        response = await http_client().get(url)
    except httpx.HTTPError as error:
        streak = failing.streak + 1 if failing is not None else 1
        wait = SETTINGS.envelope_interval_s * min(2 ** (streak - 1), MAX_BACKOFF)
        # The streak's first error stands for it: a lookup that fails or times out under load
        # is the same news, and a status flapping between them was a write per graph each time.
        first = failing.error if failing is not None else error
        _failing[url] = _Failing(first, streak, now + wait - 0.5)
    else:
        _failing.pop(url, None)
        return response
    raise first.with_traceback(None)


def prime_cache(kube: Kube) -> None:
    """List each kind the reconciles read once (in the watched namespaces), before the
    watches start: from then on their events keep the cache current."""
    namespaces = SETTINGS.watch_namespaces
    managed = {MANAGED_BY_LABEL: MANAGED_BY_VALUE}
    sources = [(GRAPH_KIND, GRAPHS, None), (GATE_KIND, GATES, None), (POD_KIND, POD, managed)]
    sources += [(kind, CHILD_KINDS[kind], managed) for kind in APPLY_ORDER]
    for kind, api_kind, labels in sources:
        if namespaces:
            listed = [o for ns in namespaces for o in kube.items(api_kind, ns, labels=labels)]
        else:
            listed = kube.list_all(api_kind, labels=labels)
        CACHE.prime(kind, listed)
    log.info("cache primed: %s", CACHE.sizes())


async def graph_body(namespace: str, name: str) -> dict[str, Any] | None:
    """The graph as the watch last reported it (the API before the cache is primed)."""
    if CACHE.ready(GRAPH_KIND):
        return CACHE.graph(namespace, name)
    return await asyncio.to_thread(reconciler().kube.get, GRAPHS, namespace, name)


def refresh_soon(namespace: str, graph: str) -> None:
    """Refresh the graph's status once ``STATUS_DEBOUNCE_S`` after the first of a burst of
    pod or Deployment events."""
    key = (namespace, graph)
    if key in _pending:
        return

    async def later() -> None:
        try:
            await asyncio.sleep(STATUS_DEBOUNCE_S)
        finally:
            _pending.pop(key, None)
        try:
            await reconcile_named(namespace, graph, apply=False)
        except Exception:
            log.exception("refreshing the status of ModuleGraph %s/%s failed", namespace, graph)

    _pending[key] = asyncio.get_running_loop().create_task(later())


def reconciler() -> Reconciler:
    """The process-wide reconciler (created on first use, after settings are final)."""
    global _reconciler
    if _reconciler is None:
        _reconciler = Reconciler(Kube(load_config(SETTINGS.kubeconfig)), SETTINGS, CACHE)
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
    # Only kopf's own trouble becomes an Event (a handler failing); the operator's news goes
    # through events.post_events, and "Handler succeeded" per object would be a write each.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.execution.max_workers = 16
    settings.networking.request_timeout = 60
    await asyncio.to_thread(prime_cache, reconciler().kube)
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
    global _http
    if _http is not None:
        await _http[1].aclose()
        _http = None


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
            body = await graph_body(namespace, name)
            if body is None:
                return None
        envelopes, error = _envelopes.get((namespace, name), (None, None))
        if (
            not apply
            and not announce
            and envelopes is None
            and (namespace, name) in _observed
            and _observed[(namespace, name)] == error
        ):  # the refresh loop, and nothing new: what the status says still holds
            return None
        _observed[(namespace, name)] = error if envelopes is None else None
        run = functools.partial(
            rec.reconcile, body, apply=apply, envelopes=envelopes, envelope_error=error
        )
        # Status refreshes read only the cache (and patch at most once): their own threads, so
        # a large apply's slow API calls do not hold back telling that graphs became Ready.
        pool = None if apply else _status_pool
        outcome = await asyncio.get_running_loop().run_in_executor(pool, run)
        if apply:
            _last_resync[(namespace, name)] = time.monotonic()
            if not announce:
                _resyncs.update(graphs=1, applied=outcome.applied)
        await _post_events(body, outcome, applied=apply and (announce or bool(outcome.pruned)))
        return outcome


async def _post_events(body: Mapping[str, Any], outcome: Outcome, *, applied: bool) -> None:
    """Post the Events the reconcile deserves with the operator's own client: this works from
    the refresh loop too, where ``kopf.event`` has no event queue."""
    events = events_for(outcome, applied=applied)
    events += rollout_events(body.get("status"), outcome.status)  # Promoted, RolledBack
    if events:
        await asyncio.to_thread(post_events, reconciler().kube, body, events)


# --- graphs ------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, "modulegraphs")
async def graph_changed(
    event: kopf.RawEvent, name: str, namespace: str | None, **kwargs: Any
) -> None:
    """A graph appeared, its spec changed, or the operator started (the watch lists every
    graph first): make its children match.

    A watch event rather than kopf's create/update/resume handlers: those record their
    progress and the last handled spec in annotations, a write per graph and per change. The
    generation this process last reconciled tells a spec change from the operator's own
    status patches (which move the resourceVersion, not the generation).
    """
    obj = event["object"]
    key = (str(namespace), name)
    if event["type"] == "DELETED":
        CACHE.remove(GRAPH_KIND, obj)
        for known in (_applied_generation, _spec_gates, _observed):
            known.pop(key, None)
        return
    CACHE.put(GRAPH_KIND, obj)
    generation = (obj.get("metadata") or {}).get("generation")
    if _applied_generation.get(key) == generation:
        return
    _applied_generation[key] = generation
    _last_resync[key] = time.monotonic()  # not due in the refresh loop while this one runs
    _known.add(key)
    named = set((obj.get("spec") or {}).get("gates") or [])
    previous = _spec_gates.get(key, set())
    _spec_gates[key] = named
    try:
        await reconcile_named(key[0], name, apply=True, body=CACHE.graph(*key) or dict(obj))
    except Exception:
        _applied_generation.pop(key, None)  # retried by the next event or the refresh loop
        _last_resync[key] = 0.0
        raise
    await refresh_gate_graphs(key[0], named | previous, kwargs["graphs_by_gate"])


@kopf.on.event(GROUP, VERSION, "privacygates")
async def gate_seen(event: kopf.RawEvent, **_: Any) -> None:
    """Keep the gates in the cache (their changes are handled by ``gate_changed``)."""
    if event["type"] == "DELETED":
        CACHE.remove(GATE_KIND, event["object"])
    else:
        CACHE.put(GATE_KIND, event["object"])


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
    _compliance.forget(*key)
    _gates_named.pop(key, None)
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
                body = await graph_body(namespace, name)
                if body is None:
                    _known.discard((namespace, name))
                    return
                gates = (body.get("spec") or {}).get("gates") or []
                _gates_named[(namespace, name)] = tuple(str(g) for g in gates)
                endpoint = (body.get("status") or {}).get("endpoint")
                payload, error = await fetch_router(endpoint)
                _envelopes[(namespace, name)] = envelopes_of(payload, error, endpoint)
                _compliance.record(namespace, name, payload)
                last = _last_resync.get((namespace, name), 0.0)
                due = time.monotonic() - last >= SETTINGS.resync_interval_s
                await reconcile_named(namespace, name, apply=due, body=body, announce=False)
            except Exception:  # one graph's trouble must not stop the others' refresh
                log.exception("refreshing ModuleGraph %s/%s failed", namespace, name)

    while True:
        await asyncio.sleep(interval)
        before = dict(_resyncs)
        await asyncio.gather(*(one(ns, name) for ns, name in sorted(_known)))
        if _resyncs != before:
            log.info(
                "resync: %d graphs checked, %d objects applied",
                _resyncs["graphs"] - before.get("graphs", 0),
                _resyncs["applied"] - before.get("applied", 0),
            )
        try:
            await refresh_gate_counts(gate_graphs())
        except Exception:
            log.exception("refreshing PrivacyGate counts failed")


def gate_graphs() -> dict[tuple[str, str], set[str]]:
    """``(namespace, gate) -> graphs`` naming it, among the graphs the loop knows (from the
    specs their last reconcile read)."""
    out: dict[tuple[str, str], set[str]] = {}
    for namespace, graph in sorted(_known):
        for gate in _gates_named.get((namespace, graph), ()):
            out.setdefault((namespace, gate), set()).add(graph)
    return out


_gates_named: dict[tuple[str, str], tuple[str, ...]] = {}
"""``(namespace, graph) -> gates`` its spec names, as last seen by the refresh loop."""


async def refresh_gate_counts(named: Mapping[tuple[str, str], set[str]]) -> None:
    """Write each gate's counts and budget window (what its graphs' routers report) into its
    status, when they changed."""
    for (namespace, gate), graphs in sorted(named.items()):
        status = _compliance.gate_status(namespace, gate, sorted(graphs))
        if status is None:
            continue
        comparable = {k: v for k, v in status.items() if k != "countedAt"}
        if _gate_counts.get((namespace, gate)) == comparable:
            continue
        await _patch_gate_status(namespace, gate, status)
        _gate_counts[(namespace, gate)] = comparable


async def fetch_router(endpoint: str | None) -> tuple[Any, str | None]:
    """The router's ``GET /envelopes`` document, or None and why not."""
    if not endpoint:
        return None, "router endpoint not known yet"
    url = endpoint.rstrip("/") + "/envelopes"
    try:
        response = await get_router(url)
    except httpx.HTTPError as error:
        return None, envelope_fetch_error(url, error)
    if response.status_code != 200:
        return None, (
            f"router envelopes unreachable at {url}: the router answered HTTP "
            f"{response.status_code}; check the router pods' logs and that they run the "
            "operator's version"
        )
    try:
        return response.json(), None
    except ValueError:
        return None, _unexpected(url)


def _unexpected(url: str) -> str:
    return (
        f"router envelopes at {url} are not in the expected form (JSON with a "
        "'modules' map); check that the router runs the operator's version"
    )


def envelopes_of(
    payload: Any, error: str | None, endpoint: str | None
) -> tuple[dict[str, Any] | None, str | None]:
    """``module -> envelope`` from a :func:`fetch_router` result, or None and why not."""
    if error is not None:
        return None, error
    modules = parse_envelopes(payload)
    if modules is None:
        return None, _unexpected(str(endpoint).rstrip("/") + "/envelopes")
    return modules, None


async def fetch_envelopes(endpoint: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The router's ``GET /envelopes`` as ``module -> envelope``, or None and why not."""
    payload, error = await fetch_router(endpoint)
    return envelopes_of(payload, error, endpoint)


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
    graphs = CACHE.graphs(namespace) if CACHE.ready(GRAPH_KIND) else None
    if graphs is None:
        graphs = await asyncio.to_thread(reconciler().kube.items, GRAPHS, namespace)
    names = (str(g["metadata"]["name"]) for g in graphs)
    return next((name for name in names if short_name(name) == label), None)


def _cache_event(kind: str, event: Mapping[str, Any]) -> None:
    obj = event.get("object") or {}
    if event.get("type") == "DELETED":
        CACHE.remove(kind, obj)
    else:
        CACHE.put(kind, obj)


async def _child_event(event: Mapping[str, Any], namespace: str, labels: Mapping[str, str]) -> None:
    obj = event.get("object") or {}
    kind = str(obj.get("kind") or "")
    _cache_event(kind, event)
    if event.get("type") is None:  # the initial listing, already covered by the graphs'
        return
    graph = await graph_of(namespace, obj, labels.get(GRAPH_LABEL))
    if not graph:
        return
    why = "deleted" if event.get("type") == "DELETED" else drift(obj)
    if why is None:
        refresh_soon(namespace, graph)
        return
    meta = obj.get("metadata") or {}
    log.info("%s %s/%s drifted (%s): reconciling", kind, namespace, meta.get("name"), why)
    await reconcile_named(namespace, graph, apply=True)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event("", "v1", "configmaps", labels=MANAGED)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=MANAGED)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
@kopf.on.event("", "v1", "serviceaccounts", labels=MANAGED)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "roles", labels=MANAGED)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", labels=MANAGED)
async def child_changed(
    event: kopf.RawEvent, namespace: str | None, labels: kopf.Labels, **_: Any
) -> None:
    """A child changed: correct drift when someone else did it, else refresh status."""
    await _child_event(event, str(namespace), labels)


@kopf.on.event("", "v1", "pods", labels={GRAPH_LABEL: kopf.PRESENT, **MANAGED})
async def pod_changed(
    event: kopf.RawEvent, namespace: str | None, labels: kopf.Labels, **_: Any
) -> None:
    """Pods carry scheduling problems and readiness: refresh the graph's status."""
    _cache_event(POD_KIND, event)
    if event.get("type") is None:
        return
    graph = await graph_of(str(namespace), event.get("object") or {}, labels.get(GRAPH_LABEL))
    if graph:
        refresh_soon(str(namespace), graph)


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
