"""``modulemesh status [NAME] [-n NS | -A]``: graphs and per-module state, as a platform team reads it.

Without a name: one line per graph (like ``kubectl get mg``, plus why it is not ready).
With a name: the conditions, then one line per module (replicas, GPUs, provider, envelope,
scheduling problems), then each module's canary rollout with its latest figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO


def configure(parser: argparse.ArgumentParser) -> None:
    """Status flags."""
    parser.add_argument("name", nargs="?", help="a ModuleGraph; every graph when omitted")
    parser.add_argument("-n", "--namespace", default=None, help="namespace (default: kubeconfig's)")
    parser.add_argument(
        "-A", "--all-namespaces", action="store_true", help="graphs of every namespace"
    )
    parser.add_argument(
        "-o", "--output", choices=["table", "json"], default="table", help="output format"
    )
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig when not in a cluster (default: $KUBECONFIG, else ~/.kube/config)",
    )


def table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Print rows as left-aligned columns, like kubectl."""
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n")


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def summary_rows(graphs: Sequence[Mapping[str, Any]], with_namespace: bool) -> list[list[str]]:
    """One row per graph: readiness, modules, GPUs, endpoint and the blocking reason."""
    header = ["NAME", "READY", "MODULES", "GPUS", "DEGRADED", "ENDPOINT", "REASON"]
    rows = [(["NAMESPACE"] if with_namespace else []) + header]
    for graph in graphs:
        status = graph.get("status") or {}
        ready = _condition(status, "Ready")
        degraded = _condition(status, "Degraded")
        row = [
            str(graph["metadata"]["name"]),
            str(ready.get("status", "Unknown")),
            str(status.get("modulesReady", "-")),
            _fmt(status.get("gpus")),
            str(degraded.get("status", "Unknown")),
            str(status.get("endpoint", "-")),
            "" if ready.get("status") == "True" else str(ready.get("reason", "NotReconciled")),
        ]
        rows.append(([str(graph["metadata"]["namespace"])] if with_namespace else []) + row)
    return rows


def detail(graph: Mapping[str, Any], out: TextIO) -> None:
    """Conditions and modules of one graph."""
    meta, status = graph["metadata"], graph.get("status") or {}
    out.write(f"ModuleGraph {meta['namespace']}/{meta['name']}\n")
    out.write(
        f"  generation {meta.get('generation')}, observed {status.get('observedGeneration', '-')}\n"
    )
    out.write(f"  endpoint   {status.get('endpoint', '-')}\n\nConditions:\n")
    rows = [["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]]
    for c in status.get("conditions") or []:
        rows.append(
            [
                str(c.get("type")),
                str(c.get("status")),
                str(c.get("reason")),
                str(c.get("lastTransitionTime")),
                str(c.get("message", "")),
            ]
        )
    table(rows, out)
    out.write("\nModules:\n")
    rows = [
        [
            "MODULE",
            "READY",
            "GPUS",
            "PROVIDER",
            "STATE",
            "RPS",
            "P99",
            "ERRORS",
            "CONFIDENCE",
            "PROBLEM",
        ]
    ]
    for m in status.get("modules") or []:
        env = m.get("envelope") or {}
        problem = m.get("unschedulable") or (
            env.get("reason") if env.get("state") != "Healthy" else ""
        )
        rows.append(
            [
                str(m.get("name")),
                f"{m.get('readyReplicas', 0)}/{m.get('desiredReplicas', 0)}",
                _fmt(m.get("gpus")),
                str(m.get("provider") or "-"),
                str(env.get("state", "Unknown")),
                _fmt(env.get("requestRate"), digits=1),
                _fmt(env.get("p99Ms"), "ms", 1),
                _fmt(env.get("errorRate"), digits=3),
                _fmt(env.get("confidence"), digits=2),
                str(problem or ""),
            ]
        )
    table(rows, out)
    rollouts(status, out)
    revisions(status, out)


def rollouts(status: Mapping[str, Any], out: TextIO) -> None:
    """Each module's canary rollout: versions, phase, step, share, reason and the figures of
    its latest judgement against their limits."""
    found = [(m["name"], m["rollout"]) for m in status.get("modules") or [] if m.get("rollout")]
    if not found:
        return
    out.write("\nRollouts:\n")
    for name, r in found:
        step = f"{r.get('stepPercent')}%{' shadow' if r.get('shadow') else ''}"
        out.write(
            f"  {name}: version {r.get('stableVersion')} -> {r.get('canaryVersion')}, "
            f"{r.get('phase')} at step {r.get('step')}/{r.get('steps')} ({step}), "
            f"canary serves {r.get('canaryShare')}%\n"
        )
        if r.get("reason"):
            out.write(f"  {r['reason']}\n")
        rows = [["  FIGURE", "STABLE", "CANARY", "LIMIT", "OK"]]
        for f in r.get("figures") or []:
            rows.append(
                [
                    f"  {f.get('name')}",
                    _fmt(f.get("stable"), digits=4),
                    _fmt(f.get("canary"), digits=4),
                    _fmt(f.get("limit"), digits=4),
                    "yes" if f.get("passed") else "NO",
                ]
            )
        if len(rows) > 1:
            table(rows, out)


def revisions(status: Mapping[str, Any], out: TextIO) -> None:
    """The graph's revision history, newest last (what ``modulemesh rollback`` returns to)."""
    kept = status.get("revisions") or []
    if not kept:
        return
    out.write("\nRevisions:\n")
    rows = [["  REVISION", "GENERATION", "APPLIED", "OUTCOME"]]
    for r in kept:
        rows.append(
            [
                f"  {r.get('revision')}",
                _fmt(r.get("generation")),
                str(r.get("appliedAt", "-")),
                str(r.get("outcome", "-")),
            ]
        )
    table(rows, out)


def run(args: argparse.Namespace) -> int:
    """Read graphs from the cluster and print them."""
    from modulemesh.operator.kube import GRAPHS, Kube, KubeConfigError, KubeError, load_config

    try:
        api = load_config(args.kubeconfig)
    except KubeConfigError as error:
        print(f"modulemesh status: {error}", file=sys.stderr)
        return 2
    kube = Kube(api)
    namespace = args.namespace or default_namespace(args.kubeconfig)
    try:
        if args.name:
            graph = kube.get(GRAPHS, namespace, args.name)
            if graph is None:
                print(
                    f"modulemesh status: ModuleGraph {namespace}/{args.name} not found",
                    file=sys.stderr,
                )
                return 1
            graphs = [graph]
        elif args.all_namespaces:
            graphs = kube.list_all(GRAPHS)
        else:
            graphs = kube.items(GRAPHS, namespace)
    except KubeError as error:
        print(f"modulemesh status: {error}", file=sys.stderr)
        return 1
    if args.output == "json":
        json.dump(graphs if not args.name else graphs[0], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.name:
        detail(graphs[0], sys.stdout)
    elif not graphs:
        print(f"No ModuleGraphs in {'any namespace' if args.all_namespaces else namespace}.")
    else:
        table(summary_rows(graphs, args.all_namespaces), sys.stdout)
    return 0


def default_namespace(kubeconfig: str | None) -> str:
    from kubernetes import config

    try:
        _, context = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        return str(context.get("context", {}).get("namespace") or "default")
    except (config.ConfigException, OSError, TypeError):
        return "default"
