"""The server on a Unix domain socket (``ServerConfig.uds``): it serves HTTP/1.1 there as on
TCP, only its owner can connect (file 0600, a missing directory made 0700; another user is
refused by the kernel), a socket left by a killed server is replaced while a live one is
refused like a taken port, and the file is removed on shutdown."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from modulemesh.httpserver import Server, ServerConfig, bind_unix

from .conftest import echo_app

NOBODY = 65534
"""The user another local process runs as (the tests run as root, as in the CI container)."""


def connect_as(uid: int, path: str) -> str:
    """Try to connect to the Unix socket ``path`` from a process running as ``uid`` (a forked
    child that drops to it): ``"refused"``, ``"connected"`` or ``"error"``."""
    pid = os.fork()
    if pid == 0:  # the child: only system calls, then _exit
        code = 2
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(path)
            code = 1
        except PermissionError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return {0: "refused", 1: "connected"}.get(os.waitstatus_to_exitcode(status), "error")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory any user may enter (0755), so only the socket file's own mode protects it."""
    path = Path(tempfile.mkdtemp(prefix="mm-uds-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def get(path: str, url: str = "/echo?x=1") -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(f"POST {url} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        return head.split(b"\r\n", 1)[0] + b" " + await reader.readexactly(length)
    finally:
        writer.close()


async def test_serves_http_on_the_socket_with_owner_only_modes(tmp_path: Path) -> None:
    path = tmp_path / "new" / "app.sock"
    server = Server(echo_app, ServerConfig(uds=str(path)))
    await server.start()
    try:
        assert server.address == f"unix:{path}"
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert await get(str(path)) == b"HTTP/1.1 200 OK /echo|x=1|hi"
    finally:
        await asyncio.wait_for(server.shutdown(), 10)
    assert not path.exists()


async def test_another_user_cannot_connect(open_dir: Path) -> None:
    path = open_dir / "app.sock"
    server = Server(echo_app, ServerConfig(uds=str(path)))
    await server.start()
    try:
        assert connect_as(NOBODY, str(path)) == "refused"
        path.chmod(0o666)  # the same socket opened up: the probe itself can connect
        assert connect_as(NOBODY, str(path)) == "connected"
        path.chmod(0o600)
        # the owner can, so the refusal is the file mode and not a dead socket
        assert (await get(str(path))).startswith(b"HTTP/1.1 200")
    finally:
        await asyncio.wait_for(server.shutdown(), 10)


def test_a_stale_socket_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # bound but never listening: what a killed server leaves behind
    stale.close()
    live = bind_unix(path)
    try:
        with pytest.raises(OSError, match="another server is listening on"):
            bind_unix(path)
        assert os.path.exists(path)  # the live server's file was left alone
    finally:
        live.close()


def test_a_file_that_is_not_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    path.write_text("precious")
    with pytest.raises(OSError, match="exists and is not a socket"):
        bind_unix(str(path))
    assert path.read_text() == "precious"


async def test_shutdown_leaves_a_successors_socket_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    first = Server(echo_app, ServerConfig(uds=str(path)))
    await first.start()
    assert first._server is not None
    first._server.close()  # the first stops listening (as if hung), a successor takes the path
    path.unlink()
    successor = bind_unix(str(path))
    try:
        await asyncio.wait_for(first.shutdown(), 10)
        assert path.exists()
    finally:
        successor.close()
