"""Sidecar settings: one frozen value built from flags (or ``MODULEMESH_SIDECAR_*`` env vars)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from modulemesh.api.gate import PrivacyGateSpec

__all__ = [
    "Mode",
    "SidecarConfig",
    "Thresholds",
    "Upstream",
    "parse_grpc_upstream",
    "parse_upstream",
]


class Mode(StrEnum):
    """``enforce`` denies uncleared requests; ``dryrun`` only records what it would deny."""

    ENFORCE = "enforce"
    DRYRUN = "dryrun"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When the envelope's state turns Degraded / Unhealthy (rates are fractions, 0..1)."""

    degraded_error_rate: float = 0.05
    unhealthy_error_rate: float = 0.5
    degraded_p50_seconds: float | None = None
    """Latency objective: p50 above which the module is Degraded; ``None`` disables it."""
    degraded_p95_seconds: float | None = None
    """Latency objective: p95 above which the module is Degraded; ``None`` disables it."""
    degraded_p99_seconds: float | None = None
    """Latency objective: p99 above which the module is Degraded; ``None`` disables it."""
    degraded_queue_depth: int | None = None
    """Runtime queue depth above which the module is Degraded; ``None`` disables the check."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where the runtime listens: a loopback address or a Unix socket (never another host)."""

    host: str
    port: int
    path: str | None = None
    """A Unix socket path: connect there instead of ``host:port`` (``modulemesh run``, where
    the socket is owner-only so nothing but the sidecar can call the runtime)."""

    @property
    def url(self) -> str:
        """The base URL, for messages: ``http://host:port`` or ``unix:/path``."""
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def host_header(self) -> bytes:
        """The ``host`` header of requests to the runtime."""
        if self.path is not None:
            return b"localhost"
        return f"{self.host}:{self.port}".encode()


def parse_upstream(url: str) -> Upstream:
    """Parse ``http://127.0.0.1:8081`` or ``unix:/run/modulemesh/runtime.sock``; refuses
    non-loopback hosts, relative socket paths and other schemes.

    The runtime must never be reachable except through the sidecar, so the sidecar will not
    forward anywhere but loopback or a local socket either.
    """
    parts = urlsplit(url)
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"a unix: upstream needs an absolute socket path, got {url!r}")
        return Upstream(host="localhost", port=0, path=parts.path)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"upstream must be an http:// URL or unix:/path, got {url!r}")
    host = parts.hostname
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"upstream must be a loopback address, got {host!r}")
    else:
        host = "127.0.0.1"
    return Upstream(host=host, port=parts.port or 80)


def parse_grpc_upstream(value: str) -> str:
    """Check a gRPC upstream (``127.0.0.1:8083``, ``localhost:8083`` or ``unix:/path``) as
    :func:`parse_upstream` checks HTTP's: loopback or a local socket only; returns the target
    as gRPC writes it."""
    if value.startswith("unix:"):
        return parse_upstream(value).url
    try:
        upstream = parse_upstream(f"http://{value}")
    except ValueError as exc:
        raise ValueError(f"gRPC upstream {value!r}: {exc}") from None
    host = f"[{upstream.host}]" if ":" in upstream.host else upstream.host
    return f"{host}:{upstream.port}"


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """Everything the sidecar needs to run; see ``modulemesh sidecar --help``."""

    module: str
    upstream: Upstream = field(default_factory=lambda: Upstream("127.0.0.1", 8081))
    host: str = "0.0.0.0"
    port: int = 8080
    clearance: frozenset[str] = frozenset()
    mode: Mode = Mode.ENFORCE
    gates: Mapping[str, PrivacyGateSpec] = field(default_factory=dict)
    """The graph's gates that classify requests by header: the sidecar derives a request's
    tags from them exactly as the router does (:class:`modulemesh.privacy.Classifier`)."""
    model_version: str | None = None
    """Version from the module spec; else the runtime's reported version is used."""
    window_seconds: float = 60.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    confidence_output: str | None = None
    """Output whose per-row maximum is the confidence; ``None``: any distribution-like output."""
    confidence_max_bytes: int = 65536
    """Responses larger than this are streamed through without a confidence sample."""
    confidence_samples: int = 64
    """Most responses parsed for confidence per envelope refresh (the rest are not sampled)."""
    upstream_timeout: float = 30.0
    body_timeout: float = 30.0
    """Seconds a client has to send its request body once the head is in (``408``)."""
    poll_interval: float = 1.0
    envelope_refresh: float = 0.5
    """Oldest the envelope in response headers may be, in seconds."""
    grpc_port: int = 0
    """The OIP v2 gRPC port (0: none), relayed to ``grpc_upstream`` under the same guard."""
    grpc_upstream: str = "127.0.0.1:8083"
    """The runtime's gRPC endpoint: ``host:port`` on loopback or ``unix:/path``."""
    audit_allow: bool = True
    """Also audit allowed decisions on tagged requests (untagged requests need no decision)."""
