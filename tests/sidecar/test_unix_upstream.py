"""A sidecar whose runtime listens only on a Unix socket (``--uds``, ``--upstream unix:``), as
``modulemesh run`` starts them: requests and probes go through the socket, the runtime has no
TCP port at all, and a runtime killed with SIGKILL comes back on the same socket path (its
stale socket file replaced) with the sidecar serving again."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import httpx
import numpy as np

from modulemesh import oip

from .conftest import Proc, free_port, start_sidecar, wait_status


def tcp_listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (any address), from ``/proc``."""
    inodes = set()
    for fd in os.scandir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(fd.path)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                found.add(int(fields[1].rsplit(":", 1)[1], 16))
    return found


def start_uds_runtime(model: Path, name: str, path: Path, log: Path) -> Proc:
    """A real runtime listening on the Unix socket ``path`` only."""
    return Proc(
        [sys.executable, "-m", "modulemesh", "runtime", "--model", str(model), "--name", name,
         "--uds", str(path)],
        log,
    )  # fmt: skip


def test_sidecar_serves_a_runtime_on_a_unix_socket_through_a_crash(
    models: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "sockets" / "clf.sock"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)
    data, _ = oip.encode_request({"input": x})
    runtime = start_uds_runtime(models["clf"], "clf", path, tmp_path / "runtime.log")
    sidecar = start_sidecar("clf", port, 0, tmp_path / "sidecar.log", "--upstream", f"unix:{path}")
    try:
        wait_status(f"{url}/readyz", 200, timeout=60)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert tcp_listening_ports(runtime.popen.pid) == set()
        assert f"listening on unix:{path}" in runtime.output()
        answer = httpx.post(f"{url}/v2/models/clf/infer", content=data, timeout=10)
        assert answer.status_code == 200, answer.text
        first = answer.json()["outputs"]
        metadata = httpx.get(f"{url}/v2/models/clf", timeout=10).json()
        assert metadata["name"] == "clf"

        runtime.kill()
        assert path.exists()  # a SIGKILL leaves the socket file behind
        down = httpx.post(f"{url}/v2/models/clf/infer", content=data, timeout=10)
        assert down.status_code == 502 and f"unix:{path}" in down.json()["error"]

        runtime = start_uds_runtime(models["clf"], "clf", path, tmp_path / "runtime2.log")
        wait_status(f"{url}/readyz", 200, timeout=60)
        again = httpx.post(f"{url}/v2/models/clf/infer", content=data, timeout=10)
        assert again.status_code == 200 and again.json()["outputs"] == first
    finally:
        sidecar.stop()
        runtime.stop()
    assert not path.exists()  # a graceful stop removes it
