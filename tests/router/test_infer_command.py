"""``modulemesh infer``: the client answers with the outputs as JSON, and every mistake, on the
command line or on the other end, is one line naming it with exit code 2 (usage) or 1 (the
server), never a traceback; an address nothing answers on is named in full, with the
``--router`` it came from.

Against a real module (runtime + sidecar), a broken peer that answers 200 with bodies that are
not OIP, and free ports (in a network namespace of the test's own for the default router).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modulemesh.cli import main

from .conftest import Pool, broken_module

GRAPH = """apiVersion: modulemesh.io/v1alpha1
kind: ModuleGraph
metadata: {name: quick}
spec:
  modules: [{name: m, model: {path: m.onnx}}]
  routing: {entry: main, nodes: [{name: main, type: sequence, steps: [{module: m}]}]}
"""
EIGHT = ",".join(str(v) for v in range(8))


def test_values_are_shaped_from_metadata_and_outputs_printed(
    pool: Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["infer", f"{pool.urls['small']}/v2/models/small", "--input", f"input={EIGHT}"]) == 0
    )
    printed = json.loads(capsys.readouterr().out)
    (output,) = printed["outputs"].values()
    assert output["shape"] == [1, 3] and output["datatype"] == "FP32"
    assert abs(sum(output["data"][0]) - 1.0) < 1e-4  # a softmax row


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shape", "input=one,8"], "--shape input=one,8: expected comma-separated sizes"),
        (["--shape", "input=3,3"], "input 'input': 8 values do not fit shape [3, 3]"),
        (["--datatype", "input=FP33"], "--datatype input=FP33: unknown"),
        (["--input", "other=1"], "the graph has no input 'other'"),
        (["--input", "input=1,2,x"], "is neither comma-separated numbers nor a .npy/.json file"),
        (["--input", "input=1,2,3"], "input 'input': 3 values do not fill rows of 8"),
        (["--input", "input=/nonexistent/x.npy"], "cannot read /nonexistent/x.npy"),
        (["--input", "input=BAD_JSON"], "is not a valid .json array"),
    ],
)
def test_usage_mistakes_exit_2_naming_them(
    pool: Pool, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[1, 2,")
    args = [a.replace("BAD_JSON", str(bad_json)) for a in args]
    if "--input" not in args:
        args += ["--input", f"input={EIGHT}"]
    assert main(["infer", f"{pool.urls['small']}/v2/models/small", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modulemesh infer: ") and message in err, err
    assert "Traceback" not in err


def test_npy_and_json_files_are_read(
    pool: Pool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", np.arange(16, dtype=np.float32).reshape(2, 8))
    (tmp_path / "x.json").write_text(json.dumps([list(range(8))]))
    for name in ("x.npy", "x.json"):
        url = f"{pool.urls['small']}/v2/models/small"
        assert main(["infer", url, "--input", f"input={tmp_path / name}"]) == 0
        rows = 2 if name == "x.npy" else 1
        assert json.loads(capsys.readouterr().out)["outputs"]["probabilities"]["shape"][0] == rows


@pytest.mark.parametrize(
    ("get_answer", "answer", "message"),
    [
        (
            b"{}",
            b"<html>oops</html>",
            "answered 200, but bad response: response body is not valid JSON",
        ),
        (
            b"<html>metadata</html>",
            b'{"outputs":[]}',
            "answered 200, but bad response: response has no 'outputs' list",
        ),
    ],
)
def test_a_server_answering_garbage_exits_1_saying_so(
    capsys: pytest.CaptureFixture[str], get_answer: bytes, answer: bytes, message: str
) -> None:
    with broken_module(answer, get_answer) as url:
        assert main(["infer", f"{url}/v2/models/g", "--input", "input=1,2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("modulemesh infer: ") and message in err, err


def free_port() -> int:
    """A port nothing listens on (bound once by us, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_nothing_listening_names_the_address_tried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v2/models/g"
    assert main(["infer", url, "--input", "input=1,2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"modulemesh infer: cannot reach {url}: ") and "refused" in err, err
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH)
    router = f"http://127.0.0.1:{port}"
    for target in ("quick", str(graph)):
        assert main(["infer", target, "--router", router, "--input", "input=1,2"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(
            f"modulemesh infer: cannot reach {router}/v2/models/quick "
            f"({target!r} on --router {router}): "
        ), err


def test_a_graph_name_on_the_default_router_says_so() -> None:
    # A network namespace of our own, so nothing else on the machine holds 127.0.0.1:8080.
    done = subprocess.run(
        ["unshare", "-rn", "sh", "-c",
         f"ip link set lo up && exec {sys.executable} -m modulemesh infer quick --input input=1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "modulemesh infer: cannot reach http://127.0.0.1:8080/v2/models/quick ('quick' on the "
        "default --router http://127.0.0.1:8080; is `modulemesh run` serving it, or pass "
        "--router URL?): [Errno 111] Connection refused"
    ]
