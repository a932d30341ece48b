"""Per-module sidecar: reverse proxy to the runtime, compliance guard, health envelope, probes."""
