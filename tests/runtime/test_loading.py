"""Model loading: local path, ``file://``, mounted ConfigMap/PVC directories, ``https://``
pinned by sha256 with an on-disk cache, and how failures are reported.

``https://`` is tested for real: a throw-away self-signed certificate (made with ``openssl`` at
test time) on a TLS file server on 127.0.0.1, trusted through ``--ca-bundle``. Plain
``http://`` is refused unless ``--allow-insecure-http`` (or its env variable) is given. A
failed load keeps the process up and live, not ready, with the reason at the ready endpoints,
in ``/stats`` and in the log. Also: warm-up before ready, and flags from
``MODULEMESH_RUNTIME_*``.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.runtime.conftest import Runtime, free_port


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def https_server(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A TLS file server on 127.0.0.1 serving the models; yields (base URL, CA bundle)."""
    root = tmp_path_factory.mktemp("https")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    served = root / "files"
    served.mkdir()
    for name in ("multi", "classifier"):
        shutil.copy(models[name], served / f"{name}.onnx")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def _infer_ok(runtime: Runtime, name: str) -> None:
    body = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
            {"name": "b", "datatype": "INT64", "shape": [1, 4], "data": [1, 0, 0, 1]},
        ]
    }
    r = runtime.client.post(f"/v2/models/{name}/infer", json=body)
    assert r.status_code == 200, r.text


def _assert_not_ready(runtime: Runtime, name: str, reason: str) -> None:
    stats = runtime.wait_settled()
    assert stats["ready"] is False
    assert reason in stats["reason"], stats
    assert runtime.client.get("/v2/health/live").status_code == 200
    for path in ("/v2/health/ready", f"/v2/models/{name}/ready"):
        r = runtime.client.get(path)
        assert r.status_code == 503
        assert reason in r.json()["error"]
    r = runtime.client.post(f"/v2/models/{name}/infer", json={"inputs": []})
    assert r.status_code == 503 and reason in r.json()["error"]
    assert reason in runtime.log
    assert runtime.proc.poll() is None  # still up


def test_local_path_and_file_uri(
    models: dict[str, Path], start_runtime: Callable[..., Runtime]
) -> None:
    path = models["multi"]
    _infer_ok(start_runtime("--model", str(path)), "multi")
    _infer_ok(start_runtime("--model", path.as_uri(), "--sha256", _sha(path)), "multi")


def test_mounted_configmap_and_pvc_directories(
    models: dict[str, Path], tmp_path: Path, start_runtime: Callable[..., Runtime]
) -> None:
    # ConfigMap volume layout: a timestamped dir, a ..data symlink to it, and file symlinks.
    cm = tmp_path / "multi"
    stamped = cm / "..2026_01_01_00_00_00.000000001"
    stamped.mkdir(parents=True)
    shutil.copy(models["multi"], stamped / "model.onnx")
    (cm / "..data").symlink_to(stamped.name)
    (cm / "model.onnx").symlink_to("..data/model.onnx")
    runtime = start_runtime("--model", str(cm))
    assert runtime.client.get("/v2/models/multi").json()["name"] == "multi"
    _infer_ok(runtime, "multi")
    # PVC with Triton-style numbered versions: the highest wins.
    pvc = tmp_path / "pvc"
    for version in ("1", "2"):
        (pvc / version).mkdir(parents=True)
        shutil.copy(models["multi"], pvc / version / "model.onnx")
    runtime = start_runtime("--model", str(pvc), "--name", "multi", "--model-version", "2")
    assert "/pvc/2/model.onnx" in runtime.log
    assert runtime.client.get("/v2/models/multi/versions/2").status_code == 200


def test_https_pinned_download_is_cached(
    https_server: tuple[str, Path],
    models: dict[str, Path],
    tmp_path: Path,
    start_runtime: Callable[..., Runtime],
) -> None:
    base, ca = https_server
    sha = _sha(models["multi"])
    cache = tmp_path / "cache"
    common = ["--sha256", sha, "--cache-dir", str(cache), "--ca-bundle", str(ca)]
    runtime = start_runtime("--model", f"{base}/multi.onnx", *common)
    _infer_ok(runtime, "multi")
    assert "downloading model" in runtime.log
    assert (cache / f"{sha}.onnx").read_bytes() == models["multi"].read_bytes()
    assert not list(cache.glob("*.part"))
    # Second start: served from the cache even though the URL now 404s.
    again = start_runtime("--model", f"{base}/gone/multi.onnx", *common)
    _infer_ok(again, "multi")
    assert "found in cache" in again.log


def test_sha256_mismatch_refuses_to_load(
    https_server: tuple[str, Path],
    models: dict[str, Path],
    tmp_path: Path,
    start_runtime: Callable[..., Runtime],
) -> None:
    base, ca = https_server
    wrong = _sha(models["classifier"])
    cache = tmp_path / "cache"
    runtime = start_runtime(
        "--model",
        f"{base}/multi.onnx",
        "--sha256",
        wrong,
        "--cache-dir",
        str(cache),
        "--ca-bundle",
        str(ca),
        ready=False,
    )
    _assert_not_ready(runtime, "multi", f"sha256 mismatch for {base}/multi.onnx: expected {wrong}")
    assert not list(cache.glob("*.onnx")), "a refused model must not be cached"
    local = start_runtime("--model", str(models["multi"]), "--sha256", wrong, ready=False)
    _assert_not_ready(local, "multi", "sha256 mismatch")


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ([], "must be pinned with --sha256"),
        (["--sha256", "0" * 64], "CERTIFICATE_VERIFY_FAILED"),
    ],
)
def test_https_needs_pin_and_trusted_certificate(
    https_server: tuple[str, Path],
    tmp_path: Path,
    start_runtime: Callable[..., Runtime],
    extra: list[str],
    reason: str,
) -> None:
    base, _ = https_server
    runtime = start_runtime(
        "--model", f"{base}/multi.onnx", "--cache-dir", str(tmp_path), *extra, ready=False
    )
    _assert_not_ready(runtime, "multi", reason)


def test_plain_http_only_with_explicit_flag(
    models: dict[str, Path], tmp_path: Path, start_runtime: Callable[..., Runtime]
) -> None:
    refused = start_runtime(
        "--model", "http://127.0.0.1:9/multi.onnx", "--sha256", "0" * 64, ready=False
    )
    _assert_not_ready(refused, "multi", "refusing plain-http model")
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(models["multi"], served / "multi.onnx")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        runtime = start_runtime(
            "--model", f"http://127.0.0.1:{server.server_address[1]}/multi.onnx",
            "--sha256", _sha(models["multi"]), "--cache-dir", str(tmp_path / "cache"),
            env={"MODULEMESH_RUNTIME_ALLOW_INSECURE_HTTP": "1"},
        )  # fmt: skip
        _infer_ok(runtime, "multi")
    finally:
        server.shutdown()
        server.server_close()


def test_broken_or_missing_model_reports_reason(
    tmp_path: Path, start_runtime: Callable[..., Runtime]
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not a protobuf")
    _assert_not_ready(
        start_runtime("--model", str(broken), ready=False), "broken", "cannot read ONNX model"
    )
    _assert_not_ready(
        start_runtime("--model", str(tmp_path / "absent.onnx"), ready=False),
        "absent",
        "does not exist",
    )


def test_warm_up_before_ready_and_env_configuration(
    models: dict[str, Path], start_runtime: Callable[..., Runtime]
) -> None:
    runtime = start_runtime(
        env={
            "MODULEMESH_RUNTIME_MODEL": str(models["classifier"]),
            "MODULEMESH_RUNTIME_NAME": "clf",
            "MODULEMESH_RUNTIME_MAX_BATCH_SIZE": "4",
            "MODULEMESH_RUNTIME_INTRA_OP_THREADS": "1",
            "MODULEMESH_RUNTIME_WARMUP_RUNS": "2",
        }
    )
    meta = runtime.client.get("/v2/models/clf").json()
    assert meta["parameters"]["max_batch_size"] == 4
    log = runtime.log
    assert log.index("warmed up with a batch of 4") < log.index("ready on CPUExecutionProvider")
    stats = runtime.client.get("/stats").json()
    assert stats["batches"] == 0, "warm-up must not count as served traffic"
