"""The operator at scale (issue 14): N ModuleGraphs of 1-3 CPU modules against the local
control plane, with the operator as a local process under the chart's ServiceAccount.

It runs in its own cluster directory (``--cluster-dir``, default
``~/.cache/modulemesh/bench-cluster``; hack/cluster picks free ports for it), never in the shared
one, and adds kwok CPU nodes sized for the pods. For each ``--graphs`` count it starts a fresh
operator, applies the graphs (``--per-namespace`` to a namespace) and reports:

- time from the apply to all reconciled (``observedGeneration`` current, ``Validated`` set, an
  entry per module) and to all ``Ready``;
- the operator's peak RSS (``VmHWM``) and CPU seconds up to Ready;
- API writes per graph to reach Ready, by verb and resource, from the API server's
  ``apiserver_request_total`` (only resources the operator writes; dry runs apart; the graphs'
  own creation by this script left out) and the Events about graphs (listed: the controllers
  post Events too, so the Events' count is taken from the Events themselves);
- then an idle window (``--idle``, default 300 s, with ``--resync-interval`` shorter so every
  graph's resync falls in it): requests per idle minute on the operator's resources, writes in
  the window, and operator CPU per idle minute.

Targets (issue 14) are printed next to each figure. Run:

    .venv/bin/python bench/operator.py --graphs 100 500 [--idle 300] [--down]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from e2e.cluster import Cluster, ClusterError, cluster_env, cluster_from, run_script  # noqa: E402
from e2e.operator_process import (  # noqa: E402
    OperatorProcess,
    install_crds,
    service_account_kubeconfig,
)

CHART = ROOT / "charts" / "modulemesh"
RELEASE_NS = "modulemesh-system"
RELEASE = "modulemesh"
OWNER = "bench"
"""hack/cluster/up records it in the cluster directory: the e2e tests refuse this cluster."""
OPERATOR_RESOURCES = {
    "modulegraphs",
    "privacygates",
    "deployments",
    "services",
    "configmaps",
    "networkpolicies",
    "poddisruptionbudgets",
    "pods",
    "events",
    "nodes",
}
"""What the operator reads or writes; idle requests on these are the operator's (the
controllers and kwok only watch them once they settle; the script does not poll while idle)."""
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE"}
TARGETS = {"reconciled_1000_s": 300.0, "rss_mb": 300.0, "writes_per_graph": 10.0, "idle_cpu": 0.05}
PODS_PER_NODE = 1000

METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Figures:
    """One scale's measurements."""

    graphs: int
    reconciled_s: float
    ready_s: float
    peak_rss_mb: float
    cpu_s: float
    writes: Counter[str]
    graph_events: int
    idle_s: float
    idle_requests: Counter[str]
    idle_writes: Counter[str]
    idle_events: int
    idle_cpu_s: float


def requests(cluster: Cluster) -> Counter[str]:
    """``apiserver_request_total`` on the operator's resources: ``VERB resource[/sub][ dry]``."""
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=120).stdout
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        m = METRIC.match(line)
        if not m:
            continue
        labels = dict(LABEL.findall(m["labels"]))
        if labels.get("resource") not in OPERATOR_RESOURCES:
            continue
        key = f"{labels.get('verb')} {labels['resource']}"
        if labels.get("subresource"):
            key += f"/{labels['subresource']}"
        if labels.get("dry_run"):
            key += " (dry run)"
        counts[key] += int(float(m["value"]))
    return counts


def delta(after: Counter[str], before: Counter[str]) -> Counter[str]:
    return Counter({k: after[k] - before[k] for k in after if after[k] - before[k] > 0})


def writes_only(counts: Counter[str]) -> Counter[str]:
    """The operator's writes: applies to its children, graph and gate patches, deletes of
    children. Not its dry runs (nothing stored), nor the controllers' and kwok's writes to pods,
    bindings, node heartbeats and Deployment status, nor Events (counted from the Events
    themselves)."""
    out: Counter[str] = Counter()
    for key, value in counts.items():
        verb, resource = key.split()[0], key.split()[1].split("/")[0]
        if verb not in WRITE_VERBS or "(dry run)" in key or resource in ("pods", "events", "nodes"):
            continue
        if verb == "PUT" and key.split()[1].endswith("/status"):
            continue  # Deployment and PodDisruptionBudget status: their controllers
        out[key] = value
    return out


def graph_events(cluster: Cluster) -> int:
    """Events about ModuleGraphs (each counted as often as it was posted)."""
    doc = cluster.kubectl_json(
        "get", "events", "-A", "--field-selector", "involvedObject.kind=ModuleGraph", timeout=120
    )
    return sum(int(e.get("count") or 1) for e in doc["items"])


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", status)[1])  # type: ignore[index]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return hwm / 1024, (int(fields[11]) + int(fields[12])) / ticks


def graph_doc(index: int) -> dict[str, Any]:
    """A graph of 1-3 CPU modules in sequence (index % 3 + 1 modules)."""
    names = [f"m{i}" for i in range(index % 3 + 1)]
    steps = []
    previous = "request.input"
    for name in names:
        steps.append({"module": name, "inputs": {"input": previous}})
        previous = f"{name}.output"
    return {
        "apiVersion": "modulemesh.io/v1alpha1",
        "kind": "ModuleGraph",
        "metadata": {"name": f"g{index:04d}"},
        "spec": {
            "modules": [{"name": n, "model": {"path": f"/models/{n}.onnx"}} for n in names],
            "routing": {
                "entry": "main",
                "nodes": [{"name": "main", "type": "sequence", "steps": steps}],
            },
        },
    }


def kwok_node(name: str) -> dict[str, Any]:
    """A CPU node with room for PODS_PER_NODE pods (kwok runs its pods on paper)."""
    size = {"cpu": "1000", "memory": "4Ti", "pods": str(PODS_PER_NODE)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/region": "eu-west",
                "topology.kubernetes.io/zone": "eu-west-a",
            },
        },
        "status": {"allocatable": size, "capacity": size},
    }


def start_cluster(cluster_dir: Path) -> Cluster:
    """hack/cluster/up in ``cluster_dir`` (reused when it runs), as the benchmark's."""
    os.environ["MODULEMESH_CLUSTER_DIR"] = str(cluster_dir)
    proc = run_script("up", timeout=3600, env={**os.environ, "MODULEMESH_CLUSTER_OWNER": OWNER})
    if proc.returncode != 0:
        raise ClusterError(f"hack/cluster/up failed:\n{proc.stderr}")
    return cluster_from(cluster_env(), started_here=True)


def install_service_account(cluster: Cluster) -> None:
    """The chart's ServiceAccount and RBAC (cluster-wide, no webhook), without its Deployment."""
    rendered = cluster.helm(
        "template", RELEASE, str(CHART), "-n", RELEASE_NS, "--set", "webhook.enabled=false",
        "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml",
    ).stdout  # fmt: skip
    cluster.kubectl("create", "namespace", RELEASE_NS, check=False)
    cluster.kubectl("apply", "-n", RELEASE_NS, "-f", "-", input=rendered)


def namespaces_for(graphs: int, per_namespace: int) -> list[str]:
    return [f"bench-{i:03d}" for i in range(math.ceil(graphs / per_namespace))]


def clear_namespaces(cluster: Cluster) -> None:
    """Delete the bench namespaces of an earlier scale and wait for them to go."""
    names = cluster.kubectl("get", "namespaces", "-o", "name").stdout.split()
    bench = [n for n in names if n.startswith("namespace/bench-")]
    if bench:
        cluster.kubectl("delete", *bench, "--wait=true", "--timeout=900s", timeout=960)


def graph_progress(cluster: Cluster, expected: int) -> tuple[int, int]:
    """How many graphs are reconciled and how many are Ready."""
    items = cluster.kubectl_json("get", "modulegraphs", "-A", timeout=120)["items"]
    reconciled = ready = 0
    for g in items:
        status = g.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        if (
            status.get("observedGeneration") == g["metadata"].get("generation")
            and "Validated" in conditions
            and len(status.get("modules") or []) == len(g["spec"]["modules"])
        ):
            reconciled += 1
        ready += conditions.get("Ready") == "True"
    return reconciled, ready


def run_scale(cluster: Cluster, graphs: int, args: argparse.Namespace, work: Path) -> Figures:
    namespaces = namespaces_for(graphs, args.per_namespace)
    if not args.restart:
        clear_namespaces(cluster)
        pods = graphs * 4  # a router and up to three modules
        nodes = [kwok_node(f"bench-cpu-{i}") for i in range(math.ceil(pods / PODS_PER_NODE) + 1)]
        cluster.apply(nodes, namespace=None)
        for ns in namespaces:
            cluster.apply(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                namespace=None,
            )
    kubeconfig = service_account_kubeconfig(
        cluster, RELEASE_NS, RELEASE, work / "sa.kubeconfig", duration="6h"
    )
    op = OperatorProcess(
        cluster,
        work / f"operator-{graphs}.log",
        kubeconfig=kubeconfig,
        envelope_interval_s=args.envelope_interval,
        resync_interval_s=args.resync_interval,
    ).start()
    try:
        assert op.proc is not None
        pid = op.proc.pid
        before, events_before = requests(cluster), graph_events(cluster)
        start = time.monotonic()
        for i, ns in enumerate([] if args.restart else namespaces):
            docs = [graph_doc(k) for k in range(graphs) if k // args.per_namespace == i]
            cluster.kubectl(
                "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs), timeout=300
            )
        reconciled_s = ready_s = math.nan
        deadline = start + args.timeout
        while time.monotonic() < deadline:
            reconciled, ready = graph_progress(cluster, graphs)
            now = time.monotonic() - start
            if reconciled >= graphs and math.isnan(reconciled_s):
                reconciled_s = now
            if ready >= graphs:
                ready_s = now
                break
            print(f"  {now:6.0f}s reconciled {reconciled}/{graphs}, Ready {ready}/{graphs}")
            time.sleep(5)
        if math.isnan(ready_s):
            raise SystemExit(f"not all {graphs} graphs Ready within {args.timeout}s")
        after, events_after = requests(cluster), graph_events(cluster)
        _, cpu = proc_stats(pid)
        writes = writes_only(delta(after, before))
        if not args.restart:
            writes["POST modulegraphs"] -= graphs  # this script's creates
        writes += Counter()  # drops the zero
        print(f"  all Ready after {ready_s:.0f}s; idle window of {args.idle:.0f}s")
        idle_before, idle_events_before = requests(cluster), graph_events(cluster)
        _, cpu0 = proc_stats(pid)
        idle_start = time.monotonic()
        time.sleep(args.idle)
        idle_s = time.monotonic() - idle_start
        rss_end, cpu1 = proc_stats(pid)
        idle_after, idle_events_after = requests(cluster), graph_events(cluster)
        idle = delta(idle_after, idle_before)
        return Figures(
            graphs=graphs,
            reconciled_s=reconciled_s,
            ready_s=ready_s,
            peak_rss_mb=rss_end,
            cpu_s=cpu,
            writes=writes,
            graph_events=events_after - events_before,
            idle_s=idle_s,
            idle_requests=idle,
            idle_writes=writes_only(idle),
            idle_events=idle_events_after - idle_events_before,
            idle_cpu_s=cpu1 - cpu0,
        )
    finally:
        op.stop()


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def report(f: Figures) -> None:
    n = f.graphs
    per_graph = (sum(f.writes.values()) + f.graph_events) / n
    minutes = f.idle_s / 60
    idle_writes = sum(f.idle_writes.values()) + f.idle_events
    idle_cpu = f.idle_cpu_s / f.idle_s
    target_s = TARGETS["reconciled_1000_s"] * n / 1000
    print(f"\n== {n} graphs ==")
    print(
        f"all reconciled: {f.reconciled_s:.0f} s (target for 1000: <= 300 s; "
        f"scaled to {n}: {target_s:.0f} s, ratio {f.reconciled_s / target_s:.2f})"
    )
    print(f"all Ready: {f.ready_s:.0f} s")
    print(
        f"operator peak RSS: {f.peak_rss_mb:.0f} MB (target at 1000 graphs <= 300 MB; "
        f"ratio {f.peak_rss_mb / TARGETS['rss_mb']:.2f}) -- {verdict(f.peak_rss_mb <= 300)}"
    )
    print(f"operator CPU to Ready: {f.cpu_s:.1f} s")
    print(
        f"writes per graph to Ready: {per_graph:.2f} (target <= 10; ratio {per_graph / 10:.2f})"
        f" -- {verdict(per_graph <= TARGETS['writes_per_graph'])}"
    )
    for key, value in sorted(f.writes.items()):
        print(f"  {key}: {value / n:.2f} per graph ({value})")
    print(f"  events about graphs: {f.graph_events / n:.2f} per graph ({f.graph_events})")
    idle_requests = sum(f.idle_requests.values())
    print(f"idle requests per minute: {idle_requests / minutes:.0f}")
    for key, value in sorted(f.idle_requests.items()):
        print(f"  {key}: {value / minutes:.1f}/min")
    print(
        f"idle writes in {f.idle_s:.0f} s (a resync included): {idle_writes} (target 0) -- "
        f"{verdict(idle_writes == 0)}"
    )
    for key, value in sorted(f.idle_writes.items()):
        print(f"  {key}: {value}")
    print(
        f"idle CPU: {f.idle_cpu_s / minutes:.1f} s per minute = {idle_cpu:.1%} of a core "
        f"(target <= 5%; ratio {idle_cpu / TARGETS['idle_cpu']:.2f}) -- "
        f"{verdict(idle_cpu <= TARGETS['idle_cpu'])}"
    )
    print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--graphs", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--per-namespace", type=int, default=50)
    parser.add_argument("--idle", type=float, default=300.0, help="idle window, seconds")
    parser.add_argument("--resync-interval", type=float, default=240.0)
    parser.add_argument("--envelope-interval", type=float, default=15.0)
    parser.add_argument("--timeout", type=float, default=3600.0, help="per scale, seconds")
    default_dir = (
        Path(os.environ.get("MODULEMESH_CACHE", Path.home() / ".cache" / "modulemesh"))
        / "bench-cluster"
    )
    parser.add_argument("--cluster-dir", type=Path, default=default_dir)
    parser.add_argument("--down", action="store_true", help="stop the bench cluster after")
    parser.add_argument(
        "--keep-graphs", action="store_true", help="leave the last scale's graphs (for --restart)"
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="keep the graphs an earlier run left (e.g. one that timed out) and measure a fresh "
        "operator over them: the catch-up, the writes of a restart, then the idle window",
    )
    args = parser.parse_args()
    if args.resync_interval >= args.idle and args.idle > 0:
        parser.error("--resync-interval must be shorter than --idle so a resync falls in it")

    # Stopped with SIGTERM (or SIGINT, ignored in a background job), still stop the operator.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cluster = start_cluster(args.cluster_dir)
    print(f"cluster {cluster.server} (state {cluster.state_dir}); load {os.getloadavg()}")
    install_crds(cluster)
    install_service_account(cluster)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
            for graphs in args.graphs:
                figures = run_scale(cluster, graphs, args, Path(tmp))
                report(figures)
                sys.stdout.flush()
            if not (args.restart or args.keep_graphs):
                clear_namespaces(cluster)
    finally:
        if args.down:
            run_script("down", "--purge", timeout=300)
    print(json.dumps({"done": args.graphs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
