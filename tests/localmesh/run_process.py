"""A ``modulemesh run`` process as a user starts it, with its output collected: shared by the
tests that run the command (local mesh, rollouts)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path


class Run:
    """A ``modulemesh run`` process with its output collected."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "modulemesh", "run", *args],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def wait_line(self, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            assert self.popen.poll() is None, "\n".join(self.lines[-40:])
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} in output:\n" + "\n".join(self.lines[-40:]))

    def output(self) -> str:
        self._thread.join(5)
        return "\n".join(self.lines)
