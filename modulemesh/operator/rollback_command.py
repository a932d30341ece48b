"""``modulemesh rollback GRAPH [--to-revision N] [-n NS]``: apply a spec from the graph's
revision history (``status.revisions``, kept by the operator) back to the graph.

The spec replaces the graph's whole spec only if nobody changed the graph since it was read, so
a concurrent edit is never overwritten; the operator then reconciles it as a new revision.
"""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    """Rollback flags."""
    parser.add_argument("name", help="the ModuleGraph")
    parser.add_argument(
        "--to-revision",
        type=int,
        default=None,
        metavar="N",
        help="the revision to return to (default: the one before the current; "
        "modulemesh status GRAPH lists them)",
    )
    parser.add_argument("-n", "--namespace", default=None, help="namespace (default: kubeconfig's)")
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig when not in a cluster (default: $KUBECONFIG, else ~/.kube/config)",
    )


def run(args: argparse.Namespace) -> int:
    """Read the graph's history, pick the revision and write its spec back."""
    from modulemesh.operator.kube import GRAPHS, Kube, KubeConfigError, KubeError, load_config
    from modulemesh.operator.revisions import RevisionError, pick
    from modulemesh.operator.status_command import default_namespace

    try:
        kube = Kube(load_config(args.kubeconfig))
    except KubeConfigError as error:
        print(f"modulemesh rollback: {error}", file=sys.stderr)
        return 2
    namespace = args.namespace or default_namespace(args.kubeconfig)
    try:
        graph = kube.get(GRAPHS, namespace, args.name)
        if graph is None:
            print(
                f"modulemesh rollback: ModuleGraph {namespace}/{args.name} not found",
                file=sys.stderr,
            )
            return 1
        revisions = (graph.get("status") or {}).get("revisions") or []
        target = pick(revisions, args.to_revision, f"{namespace}/{args.name}")
        kube.replace_spec(
            GRAPHS, namespace, args.name, target["spec"], int(graph["metadata"]["generation"])
        )
    except RevisionError as error:
        print(f"modulemesh rollback: {error}", file=sys.stderr)
        return 1
    except KubeError as error:
        hint = "; it changed meanwhile, run again" if error.status == 422 else ""
        print(f"modulemesh rollback: {error}{hint}", file=sys.stderr)
        return 1
    print(
        f"modulemesh rollback: {namespace}/{args.name} set to the spec of revision "
        f"{target['revision']} (generation {target.get('generation')}, "
        f"outcome {target.get('outcome')}); the operator records it as a new revision"
    )
    return 0
