"""ONNX module server: Open Inference Protocol v2 REST, dynamic batching, providers, loading.

Started by ``modulemesh runtime``; see :mod:`modulemesh.runtime.command` for the flags and
docs/architecture.md for the wire contract (``GET /stats`` and the response headers).
"""
