"""``modulemesh render GRAPH.yaml [-f GATES.yaml ...]``: print what the operator would apply.

The graph is validated first, exactly as ``modulemesh validate`` does; with any error nothing
is printed on stdout, every problem goes to stderr and the exit code is 1 (2 when a file
cannot be read). Warnings are printed and the graph still renders. The output is a
multi-document YAML stream for ``kubectl apply -f -`` (without ownerReferences, which only the
operator can set).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from modulemesh.api.loader import Documents

__all__ = ["configure", "dump", "run"]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``modulemesh render``."""
    from modulemesh.api.commands import add_gate_files
    from modulemesh.operator.settings import RenderSettings

    defaults = RenderSettings()
    parser.add_argument(
        "graph", metavar="GRAPH.yaml", help="file with the ModuleGraph(s) to render"
    )
    add_gate_files(parser)
    parser.add_argument(
        "-n", "--namespace", help="namespace to render into (default: the graph's, else default)"
    )
    parser.add_argument(
        "--gpu-resource",
        default=defaults.gpu_resource,
        help="GPU extended resource name for modules that name none",
    )
    for flag, value, what in (
        ("image-runtime", defaults.image_runtime, "runtime image for CPU modules"),
        ("image-runtime-gpu", defaults.image_runtime_gpu, "runtime image for GPU modules"),
        ("image-sidecar", defaults.image_sidecar, "slim image for the sidecar"),
        ("image-router", None, "router image (default: the sidecar image)"),
        ("image-pull-policy", defaults.image_pull_policy, "imagePullPolicy of every container"),
        ("cluster-domain", defaults.cluster_domain, "cluster DNS domain for Service URLs"),
    ):
        parser.add_argument(f"--{flag}", default=value, help=what)
    quantities: tuple[tuple[str, str, Literal["cpu", "memory"], str], ...] = (
        ("sidecar-cpu", defaults.sidecar_cpu, "cpu", "CPU request of every sidecar"),
        ("sidecar-memory", defaults.sidecar_memory, "memory", "memory request of every sidecar"),
        (
            "sidecar-memory-limit",
            defaults.sidecar_memory_limit,
            "memory",
            "memory limit of every sidecar",
        ),
    )
    for flag, value, kind, what in quantities:
        parser.add_argument(f"--{flag}", default=value, type=_quantity(kind), help=what)


def _quantity(kind: Literal["cpu", "memory"]) -> Callable[[str], str]:
    """An argparse ``type`` checking a quantity; argparse prints the reason with the flag."""

    def parse(value: str) -> str:
        from modulemesh.operator.settings import check_quantity

        try:
            return check_quantity(value, kind)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    return parse


def _load(paths: list[str]) -> tuple[Documents, bool]:
    """Every document of every file; the flag is False when a file could not be read."""
    from modulemesh.api.loader import Documents, load_text, unique_files

    docs = Documents()
    readable = True
    for path in unique_files(paths):
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            print(f"error: {path}: cannot read file: {reason}", file=sys.stderr)
            readable = False
            continue
        loaded = load_text(text, path)
        docs.graphs += loaded.graphs
        docs.gates += loaded.gates
        docs.issues += loaded.issues
        docs.sources.update(loaded.sources)
    return docs, readable


def _in_namespace(docs: Documents, namespace: str | None) -> None:
    """Move every graph and gate into ``namespace`` (so gate visibility matches the output)."""
    if namespace is None:
        return
    docs.graphs = [
        g.model_copy(update={"metadata": g.metadata.model_copy(update={"namespace": namespace})})
        for g in docs.graphs
    ]
    docs.gates = [
        g.model_copy(update={"metadata": g.metadata.model_copy(update={"namespace": namespace})})
        for g in docs.gates
    ]


def dump(objects: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream, keys in render's order, no anchors/aliases."""
    import yaml

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump_all(objects, Dumper=_NoAliases, sort_keys=False, explicit_start=True)


def run(args: argparse.Namespace) -> int:
    """Validate, then print the rendered objects of every graph in GRAPH.yaml."""
    from modulemesh.api.errors import Issue, Severity
    from modulemesh.api.validation import document_reports, duplicate_documents
    from modulemesh.operator.render import render
    from modulemesh.operator.settings import RenderSettings

    docs, readable = _load([args.graph, *args.gates])
    if not readable:
        return EXIT_USAGE
    _in_namespace(docs, args.namespace)
    graphs = [
        g for g in docs.graphs if docs.sources.get(f"ModuleGraph/{g.metadata.name}") == args.graph
    ]
    issues = [*docs.issues, *duplicate_documents(docs)]
    for report in document_reports(docs):
        issues += report.issues
    if not graphs and not docs.issues:
        issues.append(Issue(args.graph, "no ModuleGraph found; render needs one"))
    for issue in issues:
        print(issue, file=sys.stderr)
    errors = [i for i in issues if i.severity is Severity.ERROR]
    if errors:
        print(f"{len(errors)} error(s); nothing rendered", file=sys.stderr)
        return EXIT_INVALID

    settings = RenderSettings(
        image_runtime=args.image_runtime,
        image_runtime_gpu=args.image_runtime_gpu,
        image_sidecar=args.image_sidecar,
        image_router=args.image_router,
        image_pull_policy=args.image_pull_policy,
        gpu_resource=args.gpu_resource,
        cluster_domain=args.cluster_domain,
        sidecar_cpu=args.sidecar_cpu,
        sidecar_memory=args.sidecar_memory,
        sidecar_memory_limit=args.sidecar_memory_limit,
    )
    objects: list[dict[str, Any]] = []
    for graph in graphs:
        namespace = graph.metadata.namespace or settings.default_namespace
        gates = [g for g in docs.gates if (g.metadata.namespace or "default") == namespace]
        objects += render(graph, gates, settings)
    sys.stdout.write(dump(objects))
    return EXIT_OK
