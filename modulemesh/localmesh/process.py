"""One supervised child process: its own process group, prefixed logs, no orphans.

Each child starts in a new session (so a terminal's Ctrl-C reaches only the supervisor,
which then stops children in order) and, on Linux, with ``PR_SET_PDEATHSIG`` so that even
if the supervisor is killed outright the kernel sends the child SIGTERM. Stopping signals
the whole process group: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

__all__ = ["Child"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """A started child process whose output is streamed with a prefix."""

    def __init__(
        self,
        label: str,
        args: list[str],
        *,
        log_dir: Path | None = None,
        echo: IO[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.label = label
        self.args = args
        self._log = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            self.log_path: Path | None = log_dir / f"{label.replace('/', '-')}.log"
            self._log = self.log_path.open("a", encoding="utf-8")
        else:
            self.log_path = None
        self._echo = echo
        self.lines: list[str] = []
        self.popen = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self._pump = threading.Thread(target=self._stream, name=f"log-{label}", daemon=True)
        self._pump.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def _stream(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if len(self.lines) < 2000:
                self.lines.append(line)
            if self._log is not None:
                self._log.write(line + "\n")
                self._log.flush()
            if self._echo is not None:
                with contextlib.suppress(ValueError, OSError):
                    self._echo.write(f"[{self.label}] {line}\n")
                    self._echo.flush()

    def tail(self, lines: int = 20) -> str:
        """The last lines of output, for error messages."""
        return "\n".join(self.lines[-lines:])

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child's whole process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL; returns the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        self._pump.join(2)
        if self._log is not None:
            self._log.close()
            self._log = None
        return int(self.popen.returncode)
