"""Who holds a TCP port on 127.0.0.1: checked before ``modulemesh run`` starts anything, and
named when the router cannot bind its port.

Holders are found the way ``ss -ltnp`` does, from ``/proc``: the listening sockets' inodes in
``/proc/net/tcp{,6}``, then the processes with a descriptor on one of them. Without ``/proc``
(or without permission to read another user's descriptors) the answer is "unknown", never a
guess.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Holder", "describe_holders", "holders", "port_free"]

_LISTEN = "0A"
"""The TCP state LISTEN in ``/proc/net/tcp``."""


@dataclass(frozen=True)
class Holder:
    """A process with a listening socket on the port."""

    pid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command})" if self.command else f"pid {self.pid}"


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now (bound as our servers bind: with
    ``SO_REUSEADDR``, so connections of an earlier run in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def holders(port: int, *, proc: Path = Path("/proc")) -> list[Holder] | None:
    """Processes listening on TCP ``port`` (any local address); ``None`` when this cannot be
    told (no ``/proc``, or the socket's owner is not visible to us)."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None if not (proc / "net" / "tcp").exists() else []
    targets = {f"socket:[{inode}]" for inode in inodes}
    found: list[Holder] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.scandir(entry / "fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in targets:
                        raw = (entry / "cmdline").read_bytes()
                        command = " ".join(raw.decode(errors="replace").replace("\0", " ").split())
                        if len(command) > 120:
                            command = command[:117] + "..."
                        found.append(Holder(int(entry.name), command))
                        break
    return found or None


def describe_holders(port: int) -> str:
    """``"held by pid 12 (python -m http.server 8080)"``, or what can be said without a pid."""
    found = holders(port)
    if found:
        return "held by " + ", ".join(str(h) for h in found)
    if port_free(port):
        return "free now"
    return "held by a process this user cannot see" if found is None else "held by another process"
