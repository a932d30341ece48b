"""Validating admission webhook: refuse at ``kubectl apply`` what the operator would report.

The CRDs' schema and CEL rules refuse malformed fields in the API server; the semantic checks
(references, cycles, conditions, privacy and placement) run in the operator, which reports
``Validated=False``. With the webhook on, the same checks refuse the object before it is
stored, naming each field. One exception: a graph naming a PrivacyGate that does not exist
yet is admitted (``kubectl apply -f dir/`` may send the graph first) and reported by the
operator until the gate appears; gates that do exist are checked against.

The operator serves the webhook itself (kopf's admission server) and keeps the cluster's
``ValidatingWebhookConfiguration`` (named :data:`CONFIGURATION`) pointing at it: through the
chart's Service in a cluster, through a URL when run as a process. Its certificate comes from a
mounted secret (``tls.crt``/``tls.key``, e.g. cert-manager's) or is generated at start-up;
the configuration carries the matching CA bundle either way.
"""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from modulemesh.api import ModuleGraph, PrivacyGate
from modulemesh.api.errors import Issue, Severity, issues_from_pydantic
from modulemesh.api.validation import validate_gate, validate_graph
from modulemesh.operator.config import WebhookSettings

__all__ = [
    "CONFIGURATION",
    "Admission",
    "ServiceWebhookServer",
    "admit_gate",
    "admit_graph",
    "self_signed_certificate",
    "webhook_server",
]

CONFIGURATION = "modulemesh.io"
"""Name of the ValidatingWebhookConfiguration the operator manages (and its webhooks' suffix)."""


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
        graph = ModuleGraph.model_validate(_spec_part(body))
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
        gate = PrivacyGate.model_validate(_spec_part(body))
    except ValidationError as error:
        return Admission(errors=issues_from_pydantic(error), warnings=[])
    return _verdict(validate_gate(gate))


def _verdict(issues: Sequence[Issue]) -> Admission:
    return Admission(
        errors=[i for i in issues if i.severity is Severity.ERROR],
        warnings=[i for i in issues if i.severity is not Severity.ERROR],
    )


def _spec_part(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the models describe: status and server-set metadata play no part in validity."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta
        },
        "spec": body.get("spec"),
    }


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


class ServiceWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS webhook server, announced to the API server through a Service.

    kopf's own server announces a URL; API servers usually cannot resolve cluster DNS, so in
    a cluster the configuration must name the Service instead.
    """

    def __init__(self, *, service: tuple[str, str, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        namespace, name, port = self.service
        async for config in super().__call__(fn):
            ca_bundle = config.get("caBundle")
            service_config: dict[str, Any] = {
                "service": {"namespace": namespace, "name": name, "port": port, "path": ""}
            }
            if ca_bundle is not None:
                service_config["caBundle"] = ca_bundle
            yield service_config


def webhook_server(settings: WebhookSettings) -> kopf.WebhookServer:
    """The admission server for ``settings``, with its certificate in place."""
    if settings.cert_dir:
        directory = Path(settings.cert_dir)
        cert, key = directory / "tls.crt", directory / "tls.key"
        ca = directory / "ca.crt"
        cafile = ca if ca.exists() else cert
    else:
        if settings.service is not None:
            namespace, name, _ = settings.service
            names = [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
        else:
            names = [settings.host or "127.0.0.1"]
        directory = Path(tempfile.mkdtemp(prefix="modulemesh-webhook-"))
        cert, key = self_signed_certificate(names, directory)
        cafile = cert
    common: dict[str, Any] = {
        "addr": settings.addr,
        "port": settings.port,
        "certfile": str(cert),
        "pkeyfile": str(key),
        "cafile": str(cafile),
    }
    if settings.service is not None:
        return ServiceWebhookServer(service=settings.service, **common)
    return kopf.WebhookServer(host=settings.host, **common)
