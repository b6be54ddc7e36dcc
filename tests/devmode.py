"""Dev mode in a subprocess, and how tests talk to it: dig, the API and the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from globaldns.redis_server import free_port
from tests.conftest import require_tool
from tests.helpers import ROOT

NAME = "api.production.global.example.com"
EXE = str(Path(sys.executable).with_name("globaldns"))


@dataclass
class Dev:
    state: dict[str, Any]
    state_file: Path
    process: subprocess.Popen[str]

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [EXE, "--state-file", str(self.state_file), *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return out.stdout

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.state["api_url"] + path, timeout=5) as response:
            return json.load(response)


def start_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    if os.environ.get("REDIS_URL"):
        pytest.skip("dev mode's embedded Valkey is what this test kills; unset REDIS_URL")
    work = tmp_path_factory.mktemp("dev")
    # A private copy of the example with its own endpoint port, so that a `make dev`
    # running on this machine at the same time does not collide with the test.
    examples = ROOT / "deploy" / "examples"
    shutil.copy(examples / "topology.yaml", work / "topology.yaml")
    (work / "static").mkdir()
    endpoint_port = str(free_port())
    for file in (examples / "static").glob("*.yaml"):
        (work / "static" / file.name).write_text(file.read_text().replace("18080", endpoint_port))
    state_file = work / "state.json"
    ports = [free_port() for _ in range(4)]
    process = subprocess.Popen(
        [
            EXE,
            "--state-file",
            str(state_file),
            "dev",
            "--topology",
            str(work / "topology.yaml"),
            "--api-port",
            str(ports[0]),
            "--dns-port",
            str(ports[1]),
            "--resolver-http-port",
            str(ports[2]),
            "--control-port",
            str(ports[3]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=work,
        env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
    )
    try:
        deadline = time.monotonic() + 60
        while not (state_file.exists() and json.loads(state_file.read_text()).get("ready")):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"dev mode did not come up:\n{process.stdout.read()}")  # type: ignore[union-attr]
            time.sleep(0.1)
        yield Dev(json.loads(state_file.read_text()), state_file, process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        assert "Traceback" not in output, output


@dataclass
class Dig:
    status: str
    flags: set[str]
    answers: list[tuple[str, int, str, str]]
    authority: list[tuple[str, int, str, str]]


def dig(dev: Dev, *args: str, source: str | None = None) -> Dig:
    command = [
        require_tool("dig"),
        f"@{dev.state['dns_host']}",
        "-p",
        str(dev.state["dns_port"]),
        "+tries=1",
        "+time=10",  # RRL is off in dev mode: no reply is dropped, a late one is late
        *args,
    ]
    if source:
        command[1:1] = ["-b", source]
    out = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
    header = re.search(r"status: (\w+)", out)
    flags = re.search(r";; flags: ([a-z ]+);", out)
    assert header and flags, out

    def section(name: str) -> list[tuple[str, int, str, str]]:
        match = re.search(rf";; {name} SECTION:\n(.*?)(\n\n|\Z)", out, re.S)
        rows = []
        for line in match.group(1).splitlines() if match else []:
            owner, ttl, _cls, rtype, *data = line.split()
            rows.append((owner, int(ttl), rtype, " ".join(data)))
        return rows

    return Dig(
        header.group(1), set(flags.group(1).split()), section("ANSWER"), section("AUTHORITY")
    )


def a_records(result: Dig) -> set[str]:
    return {data for _o, _t, rtype, data in result.answers if rtype == "A"}


def registered(dev: Dev, cluster: str) -> set[str]:
    service = dev.get("/v1/services/production/api")
    return {e["address"] for e in service["endpoints"] if e["cluster"] == cluster}


HANG_GUARD_S = 30.0
"""Only a hang guard: these tests assert what happens, never how fast (see bench/)."""


def until(check: Callable[[], bool], what: str) -> float:
    """Wait until ``check()``; returns the seconds it took, to print, never to assert."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > HANG_GUARD_S:
            raise AssertionError(f"{what}: never happened (hang guard, {HANG_GUARD_S}s)")
        time.sleep(0.02)
    return time.monotonic() - started


def moves(
    dev: Dev, source: str, before: set[str], after: set[str], *, straight: bool = True
) -> float:
    """The answer ``source`` gets goes from ``before`` to ``after``: straight (one write
    changed it), or else through answers that are never empty and hold nothing else."""
    seen: list[set[str]] = []

    def arrived() -> bool:
        got = a_records(dig(dev, NAME, source=source))
        if not seen or seen[-1] != got:
            seen.append(got)
        return got == after

    seconds = until(arrived, f"the answer for {source} becoming {sorted(after)}")
    if straight:
        assert seen in ([before, after], [after]), [sorted(s) for s in seen]
    else:
        assert all(s and s <= before | after for s in seen), [sorted(s) for s in seen]
    return seconds
