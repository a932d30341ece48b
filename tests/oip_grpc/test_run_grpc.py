"""``modulemesh run`` serves the graph over gRPC too: its banner prints the router's gRPC
address, and tritonclient.grpc gets the quickstart graph's answer there, the same as over
REST (``modulemesh infer``), with the runtimes' gRPC sockets in the run's private directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

from modulemesh.localmesh.plan import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_banner_names_the_grpc_address_and_it_answers(tmp_path: Path) -> None:
    examples = tmp_path / "examples"
    examples.mkdir()
    shutil.copy(ROOT / "examples" / "quickstart.yaml", examples)
    shutil.copy(ROOT / "examples" / "build_models.py", examples)
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "modulemesh", "run", str(examples / "quickstart.yaml"),
             "--port", str(port), "--quiet"],
            cwd=examples, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        found = None
        while found is None:
            assert run.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            found = re.search(
                r"gRPC: +127\.0\.0\.1:(\d+) \(inference\.GRPCInferenceService, model "
                r"'quickstart'\)",
                log.read_text(),
            )
            time.sleep(0.2)
        x = np.full((1, 16), 0.5, np.float32)
        with triton.InferenceServerClient(f"127.0.0.1:{found.group(1)}") as client:
            assert client.is_model_ready("quickstart")
            tensor = triton.InferInput("input", [1, 16], "FP32")
            tensor.set_data_from_numpy(x)
            via_grpc = client.infer("quickstart", [tensor]).as_numpy("probabilities")
        rest = subprocess.run(
            [sys.executable, "-m", "modulemesh", "infer",
             f"http://127.0.0.1:{port}/v2/models/quickstart", "--input",
             "input=" + ",".join(["0.5"] * 16)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert rest.returncode == 0, rest.stderr
        via_rest = json.loads(rest.stdout)["outputs"]["probabilities"]
        np.testing.assert_array_equal(
            via_grpc, np.asarray(via_rest["data"], np.float32).reshape(via_rest["shape"])
        )
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0, log.read_text()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
