"""Validating admission webhook: refuse at ``kubectl apply`` what the operator would report.

The CRDs' schema and CEL rules refuse malformed fields in the API server; the semantic checks
(references, cycles, conditions, privacy and placement) run in the operator, which reports
``Validated=False``. With the webhook on, the same checks refuse the object before it is
stored, naming each field. One exception: a graph naming a PrivacyGate that does not exist
yet is admitted (``kubectl apply -f dir/`` may send the graph first) and reported by the
operator until the gate appears; gates that do exist are checked against. The other way
round, a PrivacyGate change is checked against the graphs that name it: what it would make
non-compliant is a warning per graph, or a refusal under ``strict_gates``.

The operator serves the webhook itself (kopf's admission server). The cluster's
``ValidatingWebhookConfiguration`` (named :data:`CONFIGURATION`: which kinds, which Service or
URL, the failure policy) is not the operator's: the chart installs it, and for an operator run
outside the cluster ``modulemesh webhook-configuration`` prints it for ``kubectl apply``. The
operator may only get and patch that one object (RBAC ``resourceNames``; ``create`` cannot be
limited by name, so it has none) and patches only its webhooks' ``clientConfig.caBundle``, to the
CA of the certificate it serves: from a mounted secret (``tls.crt``/``tls.key``, e.g.
cert-manager's; re-read when renewed) or generated at start-up. It never empties the
configuration: while it is down under ``failurePolicy: Ignore`` the API server's call fails at
once (no endpoints, connection refused) and the object is admitted and checked on reconcile.
(kopf's own "managed" mode would apply the configuration too, but it also creates a
MutatingWebhookConfiguration, and the RBAC to create those would let the operator mutate any
object in the cluster.)
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from modulemesh.api import ModuleGraph, PrivacyGate
from modulemesh.api.bounded_yaml import BoundsError, check_depth
from modulemesh.api.errors import Issue, Severity, issues_from_pydantic
from modulemesh.api.privacy_check import check_placement, check_privacy
from modulemesh.api.validation import validate_gate, validate_graph
from modulemesh.operator.config import WebhookSettings
from modulemesh.operator.kube import GROUP, VALIDATING_WEBHOOKS, VERSION, Kube, KubeError
from modulemesh.operator.reconcile import without_status

__all__ = [
    "CONFIGURATION",
    "RESOURCES",
    "Admission",
    "admit_gate",
    "admit_graph",
    "gate_admission_handler",
    "gate_change_problems",
    "graph_admission_handler",
    "keep_ca_bundle",
    "self_signed_certificate",
    "sync_ca_bundle",
    "webhook_configuration",
    "webhook_server",
]

log = logging.getLogger("modulemesh.operator.webhook")

CONFIGURATION = "modulemesh.io"
"""Name of the ValidatingWebhookConfiguration the operator manages (and its webhooks' suffix)."""
RESOURCES = ("modulegraphs", "privacygates")
"""What the webhook validates; each plural is also its kopf handler id and URL path."""
WEBHOOKS = tuple(f"{plural}.{CONFIGURATION}" for plural in RESOURCES)
"""The webhooks of the configuration, one per kind."""
TIMEOUT_S = 10


@dataclass(frozen=True, slots=True)
class Admission:
    """The verdict on one object: errors refuse it, warnings are shown to the client."""

    errors: list[Issue]
    warnings: list[Issue]

    def warning_lines(self) -> list[str]:
        """One line per warning, as kubectl prints them (``Warning: <path>: <message>``)."""
        return [f"{i.path}: {i.message}" for i in self.warnings]

    def message(self, kind: str, name: str) -> str:
        """The refusal, naming every field in error."""
        listing = "; ".join(f"{i.path}: {i.message}" for i in self.errors)
        return f"{kind} {name!r} is invalid: {listing}"


def admit_graph(body: Mapping[str, Any], gates: Sequence[PrivacyGate]) -> Admission:
    """Check a ModuleGraph as the reconciler would, against the gates present in its namespace."""
    if (too_deep := _bounded(body)) is not None:
        return too_deep
    try:
        graph = ModuleGraph.model_validate(without_status(body))
    except ValidationError as error:
        return Admission(errors=issues_from_pydantic(error), warnings=[])
    present = {g.metadata.name for g in gates}
    absent_gate_paths = {
        f"spec.gates[{i}]" for i, name in enumerate(graph.spec.gates) if name not in present
    }
    issues = [i for i in validate_graph(graph, gates) if i.path not in absent_gate_paths]
    return _verdict(issues)


def admit_gate(
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None = None,
    graphs: Iterable[Mapping[str, Any]] = (),
    gates: Sequence[PrivacyGate] = (),
    *,
    strict: bool = False,
) -> Admission:
    """Check a PrivacyGate on its own, then every graph of ``graphs`` (the ModuleGraph objects
    of its namespace) that names it against it, beside the namespace's other ``gates``.

    A graph the change makes non-compliant (``old``: the gate before an update, None on
    create) is a warning naming the graph and the problem; under ``strict`` an error that
    refuses the change (a dry-run gate's problems stay warnings either way).
    """
    if (too_deep := _bounded(body)) is not None:
        return too_deep
    try:
        gate = PrivacyGate.model_validate(without_status(body))
    except ValidationError as error:
        return Admission(errors=issues_from_pydantic(error), warnings=[])
    verdict = _verdict(validate_gate(gate))
    if verdict.errors:
        return verdict
    before = _parsed_gate(old)
    problems = gate_change_problems(gate, before, graphs, gates)
    refused = [p for p in problems if strict and p.severity is Severity.ERROR]
    warned = [replace(p, severity=Severity.WARNING) for p in problems if p not in refused]
    return Admission(errors=refused, warnings=[*verdict.warnings, *warned])


def gate_change_problems(
    gate: PrivacyGate,
    before: PrivacyGate | None,
    graphs: Iterable[Mapping[str, Any]],
    gates: Sequence[PrivacyGate] = (),
) -> list[Issue]:
    """The privacy and placement problems ``gate`` gives the graphs naming it that they did
    not have with ``before`` (None: without the gate), each path prefixed ``ModuleGraph/NAME:``.

    Graphs that do not parse are left out: the operator reports them on their own status.
    """
    name = gate.metadata.name
    others = {g.metadata.name: g for g in gates if g.metadata.name != name}
    problems: list[Issue] = []
    for body in graphs:
        try:
            graph = ModuleGraph.model_validate(without_status(body))
        except ValidationError:
            continue
        if name not in graph.spec.gates:
            continue
        old = {**others, name: before} if before is not None else others
        known = {(i.path, i.message) for i in _compliance(graph, old)}
        for issue in _compliance(graph, {**others, name: gate}):
            if (issue.path, issue.message) not in known:
                where = f"ModuleGraph/{graph.metadata.name}: {issue.path}"
                problems.append(replace(issue, path=where))
    return problems


def _compliance(graph: ModuleGraph, gates: Mapping[str, PrivacyGate]) -> list[Issue]:
    """What the static privacy and placement checks find in ``graph`` under ``gates``."""
    return check_privacy(graph.spec, gates) + check_placement(graph.spec, gates)


def _parsed_gate(body: Mapping[str, Any] | None) -> PrivacyGate | None:
    """The stored gate an update replaces; None on create (or when it no longer parses)."""
    if body is None:
        return None
    try:
        return PrivacyGate.model_validate(without_status(body))
    except ValidationError:
        return None


GraphLister = Callable[[str], Iterable[Mapping[str, Any]]]
"""Namespace -> the ModuleGraph objects in it (from the API server)."""
GateLister = Callable[[str], Sequence[PrivacyGate]]
"""Namespace -> the PrivacyGates in it that parse."""


def graph_admission_handler(
    list_gates: GateLister, default_namespace: str, namespaces: Sequence[str] = ()
) -> Callable[..., None]:
    """The kopf validating handler for ModuleGraphs: refuse what the reconciler would report
    as invalid, naming each field. ``namespaces``: the watched ones (empty: all)."""

    def validate_graph_admission(
        body: kopf.Body, name: str, namespace: str | None, warnings: list[str], **_: Any
    ) -> None:
        namespace = namespace or default_namespace
        if namespaces and namespace not in namespaces:
            return  # not this operator's graph (and its gates may not be readable)
        verdict = admit_graph(body, list_gates(namespace))
        warnings.extend(verdict.warning_lines())
        if verdict.errors:
            raise kopf.AdmissionError(verdict.message("ModuleGraph", name), code=422)

    return validate_graph_admission


def gate_admission_handler(
    list_graphs: GraphLister,
    list_gates: GateLister,
    default_namespace: str,
    namespaces: Sequence[str] = (),
    *,
    strict: bool = False,
) -> Callable[..., None]:
    """The kopf validating handler for PrivacyGates: refuse semantic errors, and warn about
    (``strict``: refuse) a change that makes a graph naming the gate non-compliant."""

    def validate_gate_admission(
        body: kopf.Body,
        old: kopf.Body | None,
        name: str,
        namespace: str | None,
        warnings: list[str],
        **_: Any,
    ) -> None:
        namespace = namespace or default_namespace
        graphs: Iterable[Mapping[str, Any]] = ()
        gates: Sequence[PrivacyGate] = ()
        if not namespaces or namespace in namespaces:
            try:
                graphs, gates = list(list_graphs(namespace)), list_gates(namespace)
            except KubeError as error:
                warnings.append(f"the graphs naming this gate were not checked: {error}")
        verdict = admit_gate(body, old, graphs, gates, strict=strict)
        warnings.extend(verdict.warning_lines())
        if verdict.errors:
            raise kopf.AdmissionError(verdict.message("PrivacyGate", name), code=422)

    return validate_gate_admission


def _bounded(body: Mapping[str, Any]) -> Admission | None:
    """Refuse JSON nested past the YAML loader's bound (kubectl may send either) before the
    models or anything else walk it recursively."""
    try:
        check_depth(dict(body))
    except BoundsError as error:
        return Admission(errors=[Issue(error.path or "<object>", error.reason)], warnings=[])
    return None


def _verdict(issues: Sequence[Issue]) -> Admission:
    return Admission(
        errors=[i for i in issues if i.severity is Severity.ERROR],
        warnings=[i for i in issues if i.severity is not Severity.ERROR],
    )


# --- serving ---------------------------------------------------------------------------------


def self_signed_certificate(names: Sequence[str], directory: Path) -> tuple[Path, Path]:
    """A P-256 key and a one-year self-signed certificate for ``names`` (DNS names or IPs).

    The certificate is its own CA: the webhook configuration's ``caBundle`` is the
    certificate itself, so nothing outside the operator needs to sign anything.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def webhook_server(settings: WebhookSettings) -> tuple[kopf.WebhookServer, Path]:
    """The admission server for ``settings`` with its certificate in place, and the file
    holding the CA bundle the API server must trust (the certificate itself when self-signed)."""
    if settings.cert_dir:
        directory = Path(settings.cert_dir)
        cert, key = directory / "tls.crt", directory / "tls.key"
        ca = directory / "ca.crt"
        ca_file = ca if ca.exists() else cert
    else:
        if settings.service is not None:
            namespace, name, _ = settings.service
            names = [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
        else:
            names = [settings.host or "127.0.0.1"]
        directory = Path(tempfile.mkdtemp(prefix="modulemesh-webhook-"))
        cert, key = self_signed_certificate(names, directory)
        ca_file = cert
    server = kopf.WebhookServer(
        addr=settings.addr,
        port=settings.port,
        certfile=str(cert),
        pkeyfile=str(key),
        cafile=str(ca_file),
    )
    return server, ca_file


# --- the configuration -----------------------------------------------------------------------


def webhook_configuration(
    settings: WebhookSettings,
    ca_bundle: bytes | None = None,
    watch_namespaces: Sequence[str] = (),
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration that sends our kinds' creates and updates to us.

    Only the resources themselves, not ``/status``: the operator's own status patches never
    pass through the webhook. With a namespace list, only those namespaces' objects do.
    Without ``ca_bundle`` the running operator fills it in (the chart's rendering is the same
    object: tests/chart compares them).
    """
    webhooks = []
    for plural in RESOURCES:
        client_config: dict[str, Any] = {}
        if ca_bundle is not None:
            client_config["caBundle"] = base64.b64encode(ca_bundle).decode()
        if settings.service is not None:
            namespace, name, port = settings.service
            client_config["service"] = {
                "namespace": namespace,
                "name": name,
                "port": port,
                "path": f"/{plural}",
            }
        else:
            client_config["url"] = f"{_base_url(settings)}/{plural}"
        webhook: dict[str, Any] = {
            "name": f"{plural}.{CONFIGURATION}",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": settings.failure_policy,
            "matchPolicy": "Equivalent",
            "timeoutSeconds": TIMEOUT_S,
            "clientConfig": client_config,
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": [VERSION],
                    "resources": [plural],
                    "operations": ["CREATE", "UPDATE"],
                    "scope": "Namespaced",
                }
            ],
        }
        if watch_namespaces:
            webhook["namespaceSelector"] = {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": sorted(watch_namespaces),
                    }
                ]
            }
        webhooks.append(webhook)
    return _configuration(webhooks)


def _base_url(settings: WebhookSettings) -> str:
    return f"https://{settings.host or '127.0.0.1'}:{settings.port}"


def _configuration(webhooks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": VALIDATING_WEBHOOKS.api_version,
        "kind": VALIDATING_WEBHOOKS.kind,
        "metadata": {
            "name": CONFIGURATION,
            "labels": {"app.kubernetes.io/name": "modulemesh"},
        },
        "webhooks": webhooks,
    }


def sync_ca_bundle(kube: Kube, settings: WebhookSettings, ca_bundle: bytes) -> list[str]:
    """Patch our webhooks' ``caBundle`` in the configuration where it differs from ``ca_bundle``.

    Only that field is patched (a strategic merge by webhook name), nothing is created: the
    rest belongs to whoever installed the configuration. Returns what keeps the webhook from
    reaching this operator, one line each (empty when all is well): the configuration or one
    of our webhooks missing, or a webhook calling some other Service or URL.
    """
    current = kube.get_cluster_scoped(VALIDATING_WEBHOOKS, CONFIGURATION)
    if current is None:
        return [
            f"ValidatingWebhookConfiguration {CONFIGURATION} does not exist: install it with the "
            "chart (webhook.enabled), or for an operator outside the cluster with "
            "`modulemesh webhook-configuration --webhook-port PORT | kubectl apply -f -`"
        ]
    wanted = base64.b64encode(ca_bundle).decode()
    hooks = {str(h.get("name")): h for h in current.get("webhooks") or []}
    problems = [
        f"webhook {name} is missing from ValidatingWebhookConfiguration {CONFIGURATION}"
        for name in WEBHOOKS
        if name not in hooks
    ]
    stale = [
        name
        for name in WEBHOOKS
        if name in hooks and (hooks[name].get("clientConfig") or {}).get("caBundle") != wanted
    ]
    if stale:
        patch = {"webhooks": [{"name": n, "clientConfig": {"caBundle": wanted}} for n in stale]}
        kube.patch_cluster_scoped(VALIDATING_WEBHOOKS, CONFIGURATION, patch)
        log.info("CA bundle of %s set in %s", ", ".join(stale), CONFIGURATION)
    ours = _callee(webhook_configuration(settings)["webhooks"][0]["clientConfig"])
    for name in WEBHOOKS:
        if name in hooks:
            calls = _callee(hooks[name].get("clientConfig") or {})
            if calls != ours:
                problems.append(f"webhook {name} calls {calls}, not this operator ({ours})")
    return problems


def _callee(client_config: Mapping[str, Any]) -> str:
    """Where a webhook's client config sends requests: a Service or the URL's origin."""
    service = client_config.get("service")
    if service:
        return (
            f"service {service.get('namespace')}/{service.get('name')}:{service.get('port', 443)}"
        )
    url = str(client_config.get("url") or "")
    return "url " + url.rsplit("/", 1)[0] if url.count("/") > 2 else f"url {url}"


async def keep_ca_bundle(
    kube: Kube,
    settings: WebhookSettings,
    ca_file: Path,
    *,
    check_interval: float = 60.0,
    retry_interval: float = 2.0,
) -> None:
    """Keep the configuration's CA bundle our certificate's, for as long as the operator runs.

    Checked every ``check_interval`` s (a renewed certificate, or a configuration re-installed
    without the bundle), and every ``retry_interval`` s while something is wrong, which is
    logged as an error each time it changes, so a missing configuration is named at once.
    """
    reported: list[str] = []
    while True:
        try:
            problems = await asyncio.to_thread(sync_ca_bundle, kube, settings, ca_file.read_bytes())
        except (KubeError, OSError) as error:
            problems = [f"could not set the CA bundle of {CONFIGURATION}: {error}"]
        if problems != reported:
            for problem in problems:
                log.error("admission webhook: %s", problem)
            if reported and not problems:
                log.info(
                    "admission webhook configuration %s points at this operator", CONFIGURATION
                )
            reported = problems
        await asyncio.sleep(retry_interval if problems else check_interval)
