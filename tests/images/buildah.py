"""Build and run the project's images with Debian's buildah: no Docker engine, vfs storage,
chroot isolation (see hack/images). Used by tests/images."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK_IMAGES = REPO_ROOT / "hack" / "images"
TARGETS = ("slim", "runtime", "runtime-gpu")
BUILD_TIMEOUT_S = 1800.0
CAPTURE = "/modulemesh-capture"
"""Where a command run in a container writes its stdout and stderr (a host directory)."""
BUILD_TIMES: dict[str, float] = {}
"""target -> seconds its last build took in this session (shown in the terminal summary)."""


class BuildahError(RuntimeError):
    """A buildah command or a hack/images script failed."""


def images_env() -> dict[str, str]:
    """The KEY=VALUE settings printed by hack/images/env."""
    out = subprocess.run(
        [str(HACK_IMAGES / "env")], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@dataclass(frozen=True)
class Built:
    """One built target: its image name and how long the build took."""

    target: str
    image: str
    seconds: float


class Buildah:
    """buildah with the project's storage flags."""

    def __init__(self) -> None:
        env = images_env()
        self.settings = env
        self.storage = [
            "--root",
            env["STORAGE_ROOT"],
            "--runroot",
            env["STORAGE_RUNROOT"],
            "--storage-driver",
            "vfs",
        ]

    def run(
        self, *args: str, timeout: float = 600.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["buildah", *self.storage, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise BuildahError(
                f"buildah {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def build(self, target: str) -> Built:
        """hack/images/build TARGET (the base image is made first when absent)."""
        start = time.monotonic()
        proc = subprocess.run(
            [str(HACK_IMAGES / "build"), target],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0:
            raise BuildahError(f"hack/images/build {target} failed:\n{proc.stderr[-8000:]}")
        image = proc.stdout.strip().splitlines()[-1]
        BUILD_TIMES[target] = time.monotonic() - start
        return Built(target, image, BUILD_TIMES[target])

    def inspect_image(self, image: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.run("inspect", "--type", "image", image).stdout)
        return doc

    def from_image(self, image: str) -> Container:
        """A working container of ``image`` (removed with :meth:`Container.remove`)."""
        name = self.run("from", "--pull-never", image, timeout=900).stdout.strip().splitlines()[-1]
        return Container(self, name)


class Ran(subprocess.CompletedProcess[str]):
    """A command run in a container: its own stdout and stderr, and what buildah printed."""

    buildah_output: str = ""


@dataclass(frozen=True)
class Container:
    """A buildah working container; commands run in it with chroot isolation, as its USER."""

    buildah: Buildah
    name: str

    def run(
        self,
        argv: Sequence[str],
        *,
        volumes: Sequence[str] = (),
        timeout: float = 300.0,
        check: bool = True,
    ) -> Ran:
        """Run ``argv`` in the container; its stdout and stderr are read from files.

        buildah's chroot isolation relays a command's output through pipes and stops relaying
        as soon as it learns the command exited (runCopyStdioPassData returns on the "finished"
        pipe without draining the others), so a short command's last output can be lost: an
        image test once saw an empty stdout from a script whose last line is ``echo done``.
        The command's own streams go to files in a host directory mounted at :data:`CAPTURE`
        instead, which are complete once the command has exited; buildah's exit status is the
        command's. What buildah itself printed (e.g. ``Error: exit status 3``) is kept apart, in
        :attr:`Ran.buildah_output`, for :func:`describe`.
        """
        with tempfile.TemporaryDirectory(prefix="modulemesh-capture-") as tmp:
            capture = Path(tmp)
            capture.chmod(0o777)  # the image's USER (65532) writes here
            args = ["run", "--isolation", "chroot", "-v", f"{capture}:{CAPTURE}"]
            for volume in volumes:
                args += ["-v", volume]
            wrapped = [
                "/bin/sh",
                "-c",
                f'exec "$@" >{CAPTURE}/stdout 2>{CAPTURE}/stderr',
                "capture",
                *argv,
            ]
            relayed = self.buildah.run(
                *args, self.name, "--", *wrapped, timeout=timeout, check=False
            )
            stdout = _read(capture / "stdout")
            stderr = _read(capture / "stderr")
        proc = Ran(list(argv), relayed.returncode, stdout, stderr)
        proc.buildah_output = relayed.stdout + relayed.stderr
        if check and proc.returncode != 0:
            raise BuildahError(f"in {self.name}: {describe(proc)}")
        return proc

    def sh(self, script: str, **kwargs: Any) -> Ran:
        return self.run(["/bin/sh", "-c", script], **kwargs)

    def remove(self) -> None:
        self.buildah.run("rm", self.name, check=False, timeout=600)


def _read(path: Path) -> str:
    """A captured stream; a missing file means the command never started (the wrapper failed)."""
    if not path.exists():
        return f"<{path.name} not captured: the command did not start>"
    return path.read_text(errors="replace")


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    """A command's exit code, stdout and stderr, for assertion messages."""
    argv = " ".join(str(a) for a in proc.args)
    text = (
        f"{argv[:200]!r} exited {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    buildah_output = getattr(proc, "buildah_output", "")
    return text + (f"\n--- buildah ---\n{buildah_output}" if buildah_output.strip() else "")
