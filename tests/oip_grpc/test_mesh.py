"""gRPC through a whole mesh (`modulemesh run`'s processes: runtimes, sidecars, router): a
2-step graph answers tritonclient.grpc and KServe's gRPC client with onnxruntime's exact
answers; the router's gRPC errors match its HTTP ones; a module's sidecar guards its gRPC port
as it guards HTTP (tags from gRPC metadata, every value of a key counted, header classifiers
of the gates, PERMISSION_DENIED naming the tag, an audit record) and relays what it allows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from modulemesh import audit, zoo
from modulemesh.grpc import inference_pb2 as pb
from modulemesh.localmesh.plan import MeshPlan, free_port, plan_mesh
from modulemesh.localmesh.supervisor import Mesh
from tests.oip_grpc.test_runtime import kserve
from tests.router.conftest import make_gate, make_graph, module_spec

X = np.linspace(-1.0, 1.0, 32, dtype=np.float32).reshape(2, 16)


@dataclass
class Running:
    mesh: Mesh
    plan: MeshPlan
    models: dict[str, Path]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.plan.router_grpc_port}"

    def sidecar_target(self, module: str) -> str:
        port = next(m.sidecar_grpc_port for m in self.plan.modules if m.name == module)
        return f"127.0.0.1:{port}"

    def sidecar_audit(self, module: str, tags: list[str]) -> list[dict[str, object]]:
        """The module's sidecar audit records for ``tags``, once one has been logged (its
        output is read by a thread: wait up to 10 s)."""
        deadline = time.monotonic() + 10
        while True:
            lines = self.mesh.modules[module].sidecar.lines
            found = [r for line in list(lines) if (r := audit.parse_line(line))]
            found = [r for r in found if r.get("tags") == tags]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("mesh")
    models = {
        "embed": zoo.save(zoo.embedder(features=16, dimensions=8), tmp / "embed.onnx"),
        "small": zoo.save(zoo.classifier(features=8, classes=3, seed=1), tmp / "small.onnx"),
    }
    nodes = [{"name": "main", "type": "sequence",
              "steps": [{"module": "embed", "inputs": {"input": "request.features"}},
                        {"module": "small", "inputs": {"input": "embed.embedding"}}]}]  # fmt: skip
    gate = make_gate(
        "records",
        [{"name": "phi", "classifiers": [{"header": "x-data-class", "values": ["phi"]}]},
         {"name": "public"}],
    )  # fmt: skip
    graph = make_graph(
        "quick",
        [module_spec("embed", models["embed"], clearance=["public", "phi"]),
         module_spec("small", models["small"], clearance=["public"])],
        nodes,
        gates=["records"],
    )  # fmt: skip
    plan = plan_mesh(graph, [gate], tmp, router_port=free_port())
    mesh = Mesh(plan, log_dir=tmp / "logs")
    mesh.start(ready_timeout=120)
    try:
        yield Running(mesh, plan, models)
    finally:
        mesh.stop()


def onnxruntime_answer(models: dict[str, Path], x: np.ndarray) -> np.ndarray:
    """The two models run by onnxruntime in this process, one after the other."""
    embed = ort.InferenceSession(str(models["embed"]), providers=["CPUExecutionProvider"])
    small = ort.InferenceSession(str(models["small"]), providers=["CPUExecutionProvider"])
    (embedding,) = embed.run(None, {"input": x})
    (probabilities,) = small.run(None, {"input": embedding})
    return np.asarray(probabilities)


def _features(x: np.ndarray = X) -> list[triton.InferInput]:
    tensor = triton.InferInput("features", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return [tensor]


class TestThroughTheRouter:
    def test_tritonclient_gets_onnxruntime_answers(self, running: Running) -> None:
        with triton.InferenceServerClient(running.target) as client:
            assert client.is_server_ready()
            assert client.is_model_ready("quick")
            meta = client.get_model_metadata("quick", as_json=True)
            assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [("features", "FP32")]
            result = client.infer("quick", _features(), request_id="via-router")
            np.testing.assert_array_equal(
                result.as_numpy("probabilities"), onnxruntime_answer(running.models, X)
            )
            assert result.get_response().id == "via-router"

    def test_kserve_client_gets_onnxruntime_answers(self, running: Running) -> None:
        for raw in (True, False):
            spec = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 16],
                                "data": X.ravel().tolist(), "raw": raw}]}  # fmt: skip
            got = kserve(running.target, "quick", spec)
            assert got["model_ready"] is True, got
            np.testing.assert_array_equal(
                np.asarray(got["outputs"]["probabilities"]["data"], np.float32),
                onnxruntime_answer(running.models, X),
            )

    def test_errors_name_what_is_wrong(self, running: Running) -> None:
        with triton.InferenceServerClient(running.target) as client:
            with pytest.raises(InferenceServerException) as info:
                client.infer("other", _features())
            assert info.value.status() == "StatusCode.NOT_FOUND"
            assert "this router serves graph 'quick'" in info.value.message()
            wrong = triton.InferInput("features", [2, 16], "INT32")
            wrong.set_data_from_numpy(np.zeros((2, 16), np.int32))
            with pytest.raises(InferenceServerException) as info:
                client.infer("quick", [wrong])
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
            # the router's HTTP message, word for word: node, step, module and input named
            assert info.value.message() == (
                "node 'main' step 'embed': module 'embed' answered 400: input 'input': "
                "expected datatype FP32, got INT32"
            )

    def test_router_refuses_a_tag_no_module_may_see(self, running: Running) -> None:
        # small is not cleared for phi: the router refuses before any call, as over HTTP
        with triton.InferenceServerClient(running.target) as client:
            with pytest.raises(InferenceServerException) as info:
                client.infer("quick", _features(), headers={"x-data-class": "phi"})
            assert info.value.status() == "StatusCode.PERMISSION_DENIED"
            assert "'phi'" in info.value.message()


class TestSidecarGuard:
    def _small_input(self) -> list[triton.InferInput]:
        tensor = triton.InferInput("input", [1, 8], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 8), np.float32))
        return [tensor]

    def test_uncleared_tag_is_refused_naming_it_and_audited(self, running: Running) -> None:
        target = running.sidecar_target("small")
        with (
            triton.InferenceServerClient(target) as client,
            pytest.raises(InferenceServerException) as info,
        ):
            client.infer("small", self._small_input(), headers={"x-modulemesh-tags": "pii"})
        assert info.value.status() == "StatusCode.PERMISSION_DENIED"
        assert "tag 'pii' is not in the clearance of module 'small'" in info.value.message()
        records = running.sidecar_audit("small", ["pii"])
        assert records and records[-1]["decision"] == "deny", records

    def test_every_value_of_a_metadata_key_counts(self, running: Running) -> None:
        # Two values of x-modulemesh-tags: one cleared, one not. Reading only one of them
        # (first or last) would let the request through.
        request = pb.ModelInferRequest(model_name="small")
        request.inputs.add(name="input", datatype="FP32", shape=[1, 8])
        request.raw_input_contents.append(np.ones((1, 8), np.float32).tobytes())
        with grpc.insecure_channel(running.sidecar_target("small")) as channel:
            infer = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            assert infer(request, metadata=[("x-modulemesh-tags", "public")], timeout=10)
            for values in (["public", "pii"], ["pii", "public"]):
                metadata = [("x-modulemesh-tags", v) for v in values]
                with pytest.raises(grpc.RpcError) as info:
                    infer(request, metadata=metadata, timeout=10)
                assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
                assert "tag 'pii' is not in the clearance" in (info.value.details() or "")

    def test_gate_header_classifier_tags_the_call(self, running: Running) -> None:
        target = running.sidecar_target("small")
        with (
            triton.InferenceServerClient(target) as client,
            pytest.raises(InferenceServerException) as info,
        ):
            client.infer("small", self._small_input(), headers={"x-data-class": "PHI"})
        assert info.value.status() == "StatusCode.PERMISSION_DENIED"
        assert "tag 'phi'" in info.value.message()

    def test_cleared_call_is_relayed_to_the_runtime(self, running: Running) -> None:
        with triton.InferenceServerClient(running.sidecar_target("small")) as client:
            assert client.is_model_ready("small")
            result = client.infer(
                "small", self._small_input(), headers={"x-modulemesh-tags": "public"}
            )
            with pytest.raises(InferenceServerException) as info:
                client.infer("nope", self._small_input())
        session = ort.InferenceSession(str(running.models["small"]))
        (want,) = session.run(None, {"input": np.ones((1, 8), np.float32)})
        np.testing.assert_array_equal(result.as_numpy("probabilities"), want)
        assert info.value.status() == "StatusCode.NOT_FOUND"  # the runtime's own answer
        allowed = running.sidecar_audit("small", ["public"])
        assert allowed and allowed[-1]["decision"] == "allow"
