"""The Open Inference Protocol v2 over gRPC: the proto, its codec and the servers.

``inference.proto`` is the service; ``inference_pb2`` is generated from it (``generate.py``);
:mod:`.codec` turns its messages into the HTTP request/response model the apps serve;
:mod:`.server` serves an app's six calls; :mod:`.relay` is the sidecar's guarded relay.
"""
