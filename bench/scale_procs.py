"""The processes bench/scale.py runs and what it reads about them from /proc.

Every server is started in a session (process group) of its own with ``PR_SET_PDEATHSIG``,
so that a crashed or killed benchmark takes it along, and :class:`Processes` stops every
group it started — on success, on error and on Ctrl-C — in reverse order.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class StartError(Exception):
    """A server did not come up; the message carries the tail of its log."""


def die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM when the benchmark goes away."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def free_port() -> int:
    """A loopback port free for both UDP and TCP (the resolver binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise OSError("no loopback port free for both UDP and TCP")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (``/proc/PID/stat``)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in bytes, from ``/proc/PID/status``."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)


class Processes:
    """Starts servers in their own process groups and stops every one of them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Proc] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> Proc:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        proc = Proc(name, process, log)
        self.started.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 10.0) -> None:
        """SIGTERM to the group, then SIGKILL after ``timeout``."""
        if proc in self.started:
            self.started.remove(proc)
        if proc.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.process.wait(timeout=timeout)

    def stop_all(self) -> None:
        for proc in reversed(list(self.started)):
            self.stop(proc)


def wait_http_ready(proc: Proc, url: str, timeout: float, poll_s: float = 0.01) -> float:
    """Seconds until ``url`` answers 200 (from now); StartError if the process dies first."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartError(
                f"{proc.name} exited with {proc.process.returncode}:\n{log_tail(proc.log)}"
            )
        # Not up yet, or (before it binds) another program answering on that port.
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            status, _ = http_get(url, timeout=max(0.5, poll_s))
            if status == 200:
                return time.monotonic() - start
        time.sleep(poll_s)
    raise StartError(f"{proc.name}: {url} not ready after {timeout:.0f} s:\n{log_tail(proc.log)}")


def start_http(
    procs: Processes,
    name: str,
    command: list[str],
    env_for: Callable[[], tuple[dict[str, str], str]],
    *,
    timeout: float,
    attempts: int = 3,
) -> tuple[Proc, float]:
    """Start a server on ports picked just before; again on new ones if it could not bind.

    ``env_for`` picks the ports and returns the environment and the readiness URL. A
    free port can be taken by another program before the server binds it (other test
    suites run on this machine): the server then exits, and is started once more.
    Returns the process and the seconds from its start to ready.
    """
    for attempt in range(attempts):
        env, url = env_for()
        start = time.monotonic()
        proc = procs.start(name, command, env)
        try:
            wait_http_ready(proc, url, timeout=timeout)
        except StartError:
            if proc.alive() or attempt == attempts - 1:
                raise
            procs.stop(proc)
            continue
        return proc, time.monotonic() - start
    raise StartError(f"{name} did not start")


def redis_info(url: str) -> dict[str, Any]:
    """``INFO`` of the benchmark's Redis (memory, stats, cpu), as a dict."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        info: dict[str, Any] = {}
        for section in ("memory", "stats", "cpu", "server", "keyspace"):
            info.update(client.info(section))
        info["dbsize"] = client.dbsize()
        return info
    finally:
        client.close()


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=str)
