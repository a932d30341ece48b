"""The container images, really built and run: every Dockerfile target is built with buildah
(no Docker engine) FROM a local debootstrapped Debian base, then run with `buildah run`.

Checked per target: the image config (non-root USER, ENTRYPOINT, CMD, OCI labels), that it
runs as uid/gid 65532, `modulemesh --help`, that no pip, compiler or cache is left, which
onnxruntime it carries; and for the runtime targets, the runtime serving a zoo model on
127.0.0.1 inside the image answering one inference with the same numbers as onnxruntime on
the host. The GPU target runs on the same CPU-only base, where onnxruntime-gpu offers CUDA but
falls back to the CPU provider.

Commands run in a container write their stdout and stderr to files on a mounted host directory
(images/buildah.py says why: buildah's own relay can drop a short command's output), and a
failed check shows the command's exit code, stdout and stderr.

Slow (builds take minutes cold): marked `images`; select with `-m images`.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from images.buildah import REPO_ROOT, TARGETS, Buildah, Built, Container, describe
from modulemesh import __version__, zoo

pytestmark = [pytest.mark.images, pytest.mark.timeout(3600)]

USER = "65532:65532"
CMD = {"slim": ["operator"], "runtime": ["runtime"], "runtime-gpu": ["runtime"]}
RUNTIME_TARGETS = ("runtime", "runtime-gpu")


@pytest.fixture(scope="session")
def buildah() -> Buildah:
    for tool in ("buildah", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: apt-get install buildah debootstrap (hack/deps)")
    return Buildah()


@pytest.fixture(scope="session")
def built(buildah: Buildah) -> dict[str, Built]:
    """Every target built from the working tree (the base image made first when absent)."""
    return {target: buildah.build(target) for target in TARGETS}


@pytest.fixture(scope="session")
def container(buildah: Buildah, built: dict[str, Built]) -> Iterator[Callable[[str], Container]]:
    """A working container per target, made on first use and removed at the end."""
    made: dict[str, Container] = {}

    def get(target: str) -> Container:
        if target not in made:
            made[target] = buildah.from_image(built[target].image)
        return made[target]

    yield get
    for c in made.values():
        c.remove()


def is_commit_of_this_branch(revision: str) -> bool:
    """Whether ``revision`` is HEAD or one of its ancestors (others may commit during a build)."""
    proc = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "merge-base", "--is-ancestor", revision, "HEAD"],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


@pytest.mark.parametrize("target", TARGETS)
class TestImageConfig:
    def test_non_root_user_entrypoint_and_cmd(
        self, buildah: Buildah, built: dict[str, Built], target: str
    ) -> None:
        config = buildah.inspect_image(built[target].image)["OCIv1"]["config"]
        assert config["User"] == USER
        assert config["Entrypoint"] == ["modulemesh"]
        assert config["Cmd"] == CMD[target]
        env = dict(item.split("=", 1) for item in config["Env"])
        assert env["PATH"].startswith("/opt/modulemesh/bin:")
        assert env["PYTHONDONTWRITEBYTECODE"] == "1"
        assert not any(key.startswith("PIP_") for key in env), env  # build args stay behind

    def test_oci_labels(self, buildah: Buildah, built: dict[str, Built], target: str) -> None:
        labels = buildah.inspect_image(built[target].image)["OCIv1"]["config"]["Labels"]
        title = {"slim": "modulemesh"}.get(target, f"modulemesh-{target}")
        assert labels["org.opencontainers.image.title"] == title
        assert labels["org.opencontainers.image.version"] == __version__
        assert is_commit_of_this_branch(labels["org.opencontainers.image.revision"]), labels
        assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
        assert labels["org.opencontainers.image.source"].startswith("https://")
        assert labels["org.opencontainers.image.created"][:2] == "20"


@pytest.mark.parametrize("target", TARGETS)
class TestInsideTheImage:
    def test_runs_as_65532(self, container: Callable[[str], Container], target: str) -> None:
        out = container(target).sh("id -u; id -g; id -un").stdout.split()
        assert out == ["65532", "65532", "modulemesh"]

    def test_help_and_version(self, container: Callable[[str], Container], target: str) -> None:
        c = container(target)
        help_text = c.run(["modulemesh", "--help"]).stdout
        for sub in ("runtime", "sidecar", "operator", "validate", "status"):
            assert sub in help_text, sub
        assert c.run(["modulemesh", "--version"]).stdout.strip() == f"modulemesh {__version__}"
        # each subcommand's parser builds in the image (their light imports all resolve)
        assert "--model" in c.run(["modulemesh", "runtime", "--help"]).stdout

    def test_no_compiler_pip_in_the_venv_or_caches(
        self, container: Callable[[str], Container], target: str
    ) -> None:
        script = (
            "for tool in gcc cc g++ make ld; do command -v $tool && echo found-$tool; done;"
            " for path in /opt/modulemesh/bin/pip /opt/modulemesh/bin/pip3 /root/.cache /wheels"
            " /src /opt/build /var/cache/modulemesh-wheels; do test -e $path && echo found-$path;"
            " done;"
            ' test -n "$(ls -A /mnt)" && echo found-in-mnt;'
            " python -c 'import pip' 2>/dev/null && echo found-import-pip;"
            " test -w /opt/modulemesh && echo writable-venv;"
            " test -w /opt/modulemesh/lib && echo writable-lib;"
            " echo done"
        )
        proc = container(target).sh(script)
        assert proc.stdout.split() == ["done"], describe(proc)

    def test_onnxruntime_flavour(self, container: Callable[[str], Container], target: str) -> None:
        probe = (
            "import importlib.metadata as m, json\n"
            "dists = {d.metadata['Name'].lower() for d in m.distributions()}\n"
            "try:\n"
            "    import onnxruntime as ort\n"
            "    providers = ort.get_available_providers()\n"
            "except ImportError:\n"
            "    providers = None\n"
            "print(json.dumps({'dists': sorted(dists), 'providers': providers}))\n"
        )
        found = json.loads(container(target).run(["python", "-c", probe]).stdout)
        dists = set(found["dists"])
        assert {"modulemesh", "kopf", "httpx", "onnx"} <= dists
        if target == "slim":
            assert found["providers"] is None
            assert not {"onnxruntime", "onnxruntime-gpu"} & dists
        elif target == "runtime":
            assert "onnxruntime" in dists and "onnxruntime-gpu" not in dists
            assert "CPUExecutionProvider" in found["providers"]
            assert "CUDAExecutionProvider" not in found["providers"]
        else:
            assert "onnxruntime-gpu" in dists and "onnxruntime" not in dists
            assert "CUDAExecutionProvider" in found["providers"]


INFER_CLIENT = r"""
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
deadline = time.monotonic() + 90
while True:
    try:
        with urllib.request.urlopen(base + "/v2/health/ready", timeout=2) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("runtime not ready after 90 s")
    time.sleep(0.3)
with urllib.request.urlopen(base + "/v2/models/clf", timeout=10) as r:
    metadata = json.load(r)
body = json.dumps({"inputs": [json.loads(sys.argv[2])]}).encode()
request = urllib.request.Request(
    base + "/v2/models/clf/infer", data=body, headers={"content-type": "application/json"}
)
with urllib.request.urlopen(request, timeout=30) as r:
    result = json.load(r)
print(json.dumps({"metadata": metadata, "result": result}))
"""

SERVE_AND_INFER = """
# $1 port, $2 input tensor (JSON), $3 the client above
modulemesh runtime --model /models/clf.onnx --name clf --host 127.0.0.1 --port "$1" \
  >/tmp/runtime.log 2>&1 &
pid=$!
python -c "$3" "$1" "$2"
client=$?
kill -TERM $pid
wait $pid
echo "runtime-exit=$?"
if [ $client -ne 0 ]; then cat /tmp/runtime.log >&2; fi
exit $client
"""


def free_port() -> int:
    # buildah run with chroot isolation shares the host's network namespace
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zoo classifier built on the host, mounted read-only into the image."""
    path = tmp_path_factory.mktemp("models")
    zoo.save(zoo.classifier(name="clf", features=8, classes=3, hidden=16), path / "clf.onnx")
    path.chmod(0o755)
    (path / "clf.onnx").chmod(0o644)
    return path


def host_reference(model: Path, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out: np.ndarray[Any, Any] = session.run(None, {"input": x})[0]
    return out


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_runtime_serves_a_zoo_model_inside_the_image(
    container: Callable[[str], Container], model_dir: Path, target: str
) -> None:
    x = np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(2, 8)
    tensor = {"name": "input", "shape": [2, 8], "datatype": "FP32", "data": x.ravel().tolist()}
    proc = container(target).run(
        [
            "/bin/sh",
            "-c",
            SERVE_AND_INFER,
            "serve",
            str(free_port()),
            json.dumps(tensor),
            INFER_CLIENT,
        ],
        volumes=[f"{model_dir}:/models:ro"],
        check=False,
        timeout=240,
    )
    assert proc.returncode == 0, describe(proc)
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "runtime-exit=0", lines  # graceful drain on SIGTERM
    answer = json.loads(lines[-2])
    metadata, result = answer["metadata"], answer["result"]
    assert metadata["name"] == "clf"
    # no GPU here: both runtime images serve on the CPU provider (the GPU one by fallback)
    assert metadata["parameters"]["provider"] == "CPUExecutionProvider"
    (output,) = result["outputs"]
    assert output["name"] == "probabilities"
    assert output["shape"] == [2, 3]
    got = np.asarray(output["data"], dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(got, host_reference(model_dir / "clf.onnx", x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), [1.0, 1.0], rtol=1e-5)


def test_a_command_s_streams_and_exit_code_arrive_whole(
    container: Callable[[str], Container],
) -> None:
    """What every test here reads: a short command's stdout, stderr and exit code, each run
    (buildah's own relay could drop the last output of a command that exits at once)."""
    c = container("slim")
    for attempt in range(10):
        proc = c.sh(f"echo out-{attempt}; echo err-{attempt} >&2; exit 3", check=False)
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            3,
            f"out-{attempt}\n",
            f"err-{attempt}\n",
        ), describe(proc)
    lines = c.sh("seq 1 20000").stdout.splitlines()
    assert lines == [str(i) for i in range(1, 20001)]
