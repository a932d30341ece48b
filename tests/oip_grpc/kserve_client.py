"""Runs KServe's own gRPC client (``kserve.InferenceGRPCClient``) against a target, in a process
of its own: kserve registers the ``inference.*`` protobuf messages in protobuf's default pool,
as ``tritonclient.grpc`` does, and one process cannot import both.

    python kserve_client.py TARGET MODEL REQUEST_JSON

REQUEST_JSON: ``{"inputs": [{"name", "datatype", "shape", "data", "raw": bool}],
"metadata": [[key, value], ...]}``. Prints one JSON line: ``{"live", "ready", "model_ready",
"outputs": {name: {"datatype", "shape", "data"}}}`` or ``{"code", "details"}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}


async def main(target: str, model: str, spec: dict[str, Any]) -> dict[str, Any]:
    client = InferenceGRPCClient(url=target, use_ssl=False, timeout=30)
    try:
        out: dict[str, Any] = {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "model_ready": await client.is_model_ready(model),
        }
        inputs = []
        for tensor in spec["inputs"]:
            if tensor.get("raw", True):
                item = InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
                array = np.asarray(tensor["data"], dtype=_DTYPES[tensor["datatype"]])
                item.set_data_from_numpy(array.reshape(tensor["shape"]), binary_data=True)
            else:  # a list: the client sends typed contents (fp32_contents, ...)
                item = InferInput(
                    tensor["name"], tensor["shape"], tensor["datatype"], data=tensor["data"]
                )
            inputs.append(item)
        request = InferRequest(model_name=model, infer_inputs=inputs, request_id="kserve-1")
        metadata = [tuple(pair) for pair in spec.get("metadata", [])]
        try:
            response = await client.infer(request, headers=metadata)
        except grpc.RpcError as exc:
            return {**out, "code": exc.code().name, "details": exc.details()}
        out["id"] = response.id
        out["outputs"] = {
            o.name: {"datatype": o.datatype, "shape": o.shape, "data": o.as_numpy().tolist()}
            for o in response.outputs
        }
        return out
    finally:
        await client.close()


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
    print(json.dumps(result))
