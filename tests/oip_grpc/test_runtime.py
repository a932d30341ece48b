"""The runtime's OIP v2 gRPC port, called by tritonclient.grpc and by KServe's gRPC client as
they are: health, metadata, and onnxruntime's exact answers with raw (binary) and typed
tensors; bad input gets INVALID_ARGUMENT / NOT_FOUND naming what is wrong; a message over the
runtime's --max-body-bytes is refused; SIGTERM closes the gRPC port with the HTTP one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from modulemesh import zoo
from tests.runtime.conftest import Runtime, free_port

HERE = Path(__file__).resolve().parent
A = np.arange(12, dtype=np.float32).reshape(3, 4) / 3
B = np.array([[1, -1, 0, 2], [0, 0, 5, -3], [7, 1, 1, -1]], dtype=np.int64)


class GrpcRuntime(Runtime):
    """A runtime with its gRPC port."""

    def __init__(self, args: list[str], tmp: Path) -> None:
        self.grpc_port = free_port()
        super().__init__([*args, "--grpc-port", str(self.grpc_port)], tmp)
        self.target = f"127.0.0.1:{self.grpc_port}"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo.save(zoo.multi_input(), tmp_path_factory.mktemp("models") / "multi.onnx")


@pytest.fixture(scope="module")
def runtime(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcRuntime]:
    rt = GrpcRuntime(
        ["--model", str(model), "--max-body-bytes", "65536"], tmp_path_factory.mktemp("rt")
    )
    rt.wait_ready()
    yield rt
    rt.stop()


@pytest.fixture
def client(runtime: GrpcRuntime) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(runtime.target)
    yield c
    c.close()


def expected(model: Path, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """onnxruntime's own answer, in this process."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"a": a, "b": b}), strict=True))


def _inputs(a: np.ndarray = A, b: np.ndarray = B) -> list[triton.InferInput]:
    ia = triton.InferInput("a", list(a.shape), "FP32")
    ia.set_data_from_numpy(a)
    ib = triton.InferInput("b", list(b.shape), "INT64")
    ib.set_data_from_numpy(b)
    return [ia, ib]


def kserve(target: str, model: str, spec: dict[str, Any]) -> dict[str, Any]:
    """KServe's gRPC client, run in a process of its own (kserve_client.py says why)."""
    done = subprocess.run(
        [sys.executable, str(HERE / "kserve_client.py"), target, model, json.dumps(spec)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class TestTritonClient:
    def test_health_and_metadata(self, client: triton.InferenceServerClient) -> None:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("multi")
        assert not client.is_model_ready("nope")
        meta = client.get_model_metadata("multi", as_json=True)
        assert meta["platform"] == "onnx_onnxv1"
        assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
            ("a", "FP32", ["-1", "4"]), ("b", "INT64", ["-1", "4"]),
        ]  # fmt: skip
        assert client.get_server_metadata(as_json=True)["name"] == "modulemesh"

    def test_exact_answers_with_raw_tensors(
        self, client: triton.InferenceServerClient, model: Path
    ) -> None:
        result = client.infer("multi", _inputs(), request_id="g-1")
        want = expected(model, A, B)
        np.testing.assert_array_equal(result.as_numpy("sum"), want["sum"])
        np.testing.assert_array_equal(result.as_numpy("mask"), want["mask"])
        assert result.as_numpy("mask").dtype == np.bool_
        response = result.get_response()
        assert (response.id, response.model_name, response.model_version) == ("g-1", "multi", "1")

    def test_requested_output_only(self, client: triton.InferenceServerClient) -> None:
        result = client.infer("multi", _inputs(), outputs=[triton.InferRequestedOutput("mask")])
        assert result.as_numpy("sum") is None
        np.testing.assert_array_equal(result.as_numpy("mask"), B > 0)


class TestKServeClient:
    def test_raw_and_typed_tensors_get_exact_answers(
        self, runtime: GrpcRuntime, model: Path
    ) -> None:
        want = expected(model, A, B)
        for raw in (True, False):
            spec = {"inputs": [
                {"name": "a", "datatype": "FP32", "shape": [3, 4], "data": A.ravel().tolist(),
                 "raw": raw},
                {"name": "b", "datatype": "INT64", "shape": [3, 4], "data": B.ravel().tolist(),
                 "raw": raw},
            ]}  # fmt: skip
            got = kserve(runtime.target, "multi", spec)
            assert (got["live"], got["ready"], got["model_ready"]) == (True, True, True)
            assert got["id"] == "kserve-1"
            np.testing.assert_array_equal(
                np.asarray(got["outputs"]["sum"]["data"], np.float32), want["sum"]
            )
            assert got["outputs"]["mask"]["data"] == want["mask"].tolist()


class TestBadInput:
    def test_wrong_datatype_names_the_input(self, client: triton.InferenceServerClient) -> None:
        ia = triton.InferInput("a", [3, 4], "FP64")
        ia.set_data_from_numpy(A.astype(np.float64))
        with pytest.raises(InferenceServerException) as info:
            client.infer("multi", [ia, _inputs()[1]])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "input 'a': expected datatype FP32, got FP64" in info.value.message()

    def test_wrong_shape_names_the_input(self, client: triton.InferenceServerClient) -> None:
        a, b = np.zeros((1, 3), np.float32), np.zeros((1, 3), np.int64)
        with pytest.raises(InferenceServerException) as info:
            client.infer("multi", _inputs(a, b))
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "input 'a': expected shape [-1, 4]" in info.value.message()

    def test_shape_that_does_not_fit_the_raw_bytes(
        self, client: triton.InferenceServerClient
    ) -> None:
        ia = triton.InferInput("a", [3, 4], "FP32")
        ia.set_data_from_numpy(A)
        ia.set_shape([4, 4])
        with pytest.raises(InferenceServerException) as info:
            client.infer("multi", [ia, _inputs()[1]])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "raw_input_contents[0] has 48 bytes but shape [4, 4] of FP32 needs 64" in (
            info.value.message()
        )

    def test_unknown_model_and_version(self, client: triton.InferenceServerClient) -> None:
        with pytest.raises(InferenceServerException) as info:
            client.infer("nope", _inputs())
        assert info.value.status() == "StatusCode.NOT_FOUND"
        assert "unknown model 'nope'; this runtime serves 'multi'" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            client.infer("multi", _inputs(), model_version="7")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        assert "unknown version '7'" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("nope")
        assert info.value.status() == "StatusCode.NOT_FOUND"

    def test_message_over_the_body_limit_is_refused(self, runtime: GrpcRuntime) -> None:
        # --max-body-bytes 65536 bounds gRPC messages as it bounds HTTP bodies.
        big = np.zeros((4096, 4), np.float32)  # 64 KiB of tensor alone
        with (
            triton.InferenceServerClient(runtime.target) as c,
            pytest.raises(InferenceServerException) as info,
        ):
            c.infer("multi", _inputs(big, np.zeros((4096, 4), np.int64)))
        assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert "larger than max" in info.value.message()


def test_sigterm_closes_the_grpc_port_too(model: Path, tmp_path: Path) -> None:
    rt = GrpcRuntime(["--model", str(model)], tmp_path)
    try:
        rt.wait_ready()
        with triton.InferenceServerClient(rt.target) as c:
            assert c.is_server_ready()
            rt.proc.send_signal(signal.SIGTERM)
            assert rt.proc.wait(30) == 0, rt.log
            with pytest.raises(InferenceServerException) as info:
                c.is_server_live(client_timeout=5)
            assert info.value.status() in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
    finally:
        rt.stop()


def test_a_taken_grpc_port_stops_the_start_naming_it(model: Path, tmp_path: Path) -> None:
    first = GrpcRuntime(["--model", str(model)], tmp_path)
    try:
        first.wait_ready()
        # Another runtime on the same gRPC port (the first holds it): it must not share it.
        second = Runtime(["--model", str(model), "--grpc-port", str(first.grpc_port)], tmp_path)
        try:
            assert second.proc.wait(30) == 3, second.log
            assert f"gRPC cannot listen on 127.0.0.1:{first.grpc_port}" in second.log
        finally:
            second.stop()
        with triton.InferenceServerClient(first.target) as c:
            assert c.is_server_ready()
    finally:
        first.stop()


def test_grpcio_loads_only_in_a_runtime_that_serves_grpc() -> None:
    # Start-up cost and memory of a runtime without --grpc-port stay what they were.
    script = (
        "import sys\n"
        "from modulemesh.runtime import server\n"
        "from modulemesh.runtime.app import RuntimeApp, RuntimeState\n"
        "from modulemesh.runtime.config import RuntimeConfig\n"
        "config = RuntimeConfig(model='m.onnx')\n"
        "assert server.grpc_companion(RuntimeApp(config, RuntimeState('m')), config) is None\n"
        "print('grpc' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
