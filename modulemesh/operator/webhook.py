"""Validating admission webhook: refuse at ``kubectl apply`` what the operator would report.

The CRDs' schema and CEL rules refuse malformed fields in the API server; the semantic checks
(references, cycles, conditions, privacy and placement) run in the operator, which reports
``Validated=False``. With the webhook on, the same checks refuse the object before it is
stored, naming each field. One exception: a graph naming a PrivacyGate that does not exist
yet is admitted (``kubectl apply -f dir/`` may send the graph first) and reported by the
operator until the gate appears; gates that do exist are checked against.

The operator serves the webhook itself (kopf's admission server) and applies the cluster's
``ValidatingWebhookConfiguration`` (named :data:`CONFIGURATION`) pointing at it: through the
chart's Service in a cluster, through a URL when run as a process; when it stops under
``failurePolicy: Ignore`` it empties the configuration's webhooks. Its certificate comes from a mounted secret (``tls.crt``/
``tls.key``, e.g. cert-manager's; re-read when renewed) or is generated at start-up; the
configuration carries the matching CA bundle either way. (kopf's own "managed" mode would do
the applying too, but it also creates a MutatingWebhookConfiguration, and the RBAC to create
those would let the operator mutate any object in the cluster.)
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from modulemesh.api import ModuleGraph, PrivacyGate
from modulemesh.api.errors import Issue, Severity, issues_from_pydantic
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
    "keep_configuration",
    "self_signed_certificate",
    "webhook_configuration",
    "webhook_server",
]

log = logging.getLogger("modulemesh.operator.webhook")

CONFIGURATION = "modulemesh.io"
"""Name of the ValidatingWebhookConfiguration the operator manages (and its webhooks' suffix)."""
RESOURCES = ("modulegraphs", "privacygates")
"""What the webhook validates; each plural is also its kopf handler id and URL path."""
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


def admit_gate(body: Mapping[str, Any]) -> Admission:
    """Check a PrivacyGate on its own."""
    try:
        gate = PrivacyGate.model_validate(without_status(body))
    except ValidationError as error:
        return Admission(errors=issues_from_pydantic(error), warnings=[])
    return _verdict(validate_gate(gate))


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
    settings: WebhookSettings, ca_bundle: bytes, watch_namespaces: Sequence[str] = ()
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration that sends our kinds' creates and updates to us.

    Only the resources themselves, not ``/status``: the operator's own status patches never
    pass through the webhook. With a namespace list, only those namespaces' objects do.
    """
    webhooks = []
    for plural in RESOURCES:
        client_config: dict[str, Any] = {"caBundle": base64.b64encode(ca_bundle).decode()}
        if settings.service is not None:
            namespace, name, port = settings.service
            client_config["service"] = {
                "namespace": namespace,
                "name": name,
                "port": port,
                "path": f"/{plural}",
            }
        else:
            client_config["url"] = (
                f"https://{settings.host or '127.0.0.1'}:{settings.port}/{plural}"
            )
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


def _configuration(webhooks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": VALIDATING_WEBHOOKS.api_version,
        "kind": VALIDATING_WEBHOOKS.kind,
        "metadata": {
            "name": CONFIGURATION,
            "labels": {"app.kubernetes.io/managed-by": "modulemesh-operator"},
        },
        "webhooks": webhooks,
    }


async def keep_configuration(
    kube: Kube,
    settings: WebhookSettings,
    ca_file: Path,
    watch_namespaces: Sequence[str] = (),
    *,
    check_interval: float = 60.0,
    listening: Callable[[], bool] | None = None,
) -> None:
    """Apply the configuration once the server listens, and again when the CA bundle changes.

    When cancelled (the operator stopping) under ``failurePolicy: Ignore`` it empties the
    configuration, so no API call waits on a webhook that is gone; under ``Fail`` it leaves it
    in place, since admitting objects unchecked while the operator is away is what ``Fail``
    rules out.
    """
    while listening is not None and not listening():
        await asyncio.sleep(0.2)
    applied: bytes | None = None
    try:
        while True:
            ca_bundle = ca_file.read_bytes()
            if ca_bundle != applied:
                config = webhook_configuration(settings, ca_bundle, watch_namespaces)
                await asyncio.to_thread(kube.apply_cluster_scoped, VALIDATING_WEBHOOKS, config)
                log.info("validating webhook configuration %s applied", CONFIGURATION)
                applied = ca_bundle
            await asyncio.sleep(check_interval)
    finally:
        if applied is not None and settings.failure_policy == "Ignore":
            try:
                kube.apply_cluster_scoped(VALIDATING_WEBHOOKS, _configuration([]))
                log.info("validating webhook configuration %s emptied", CONFIGURATION)
            except KubeError as error:
                log.warning("could not empty webhook configuration %s: %s", CONFIGURATION, error)
