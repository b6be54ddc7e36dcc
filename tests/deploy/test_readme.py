"""Every command of the README's "Deploying to Kubernetes" section works as written, except
those marked as needing a live cluster or a container daemon (CoreDNS's readme_test.go
idea: documentation that cannot rot)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import require_tool
from tests.helpers import ROOT

SKIP_MARKS = ("# live cluster", "# needs a running docker daemon")


def skipped(command: str) -> bool:
    return any(mark in command for mark in SKIP_MARKS)


def section_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Deploying to Kubernetes", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        joined = block.replace("\\\n", " ")
        commands.extend(line.strip() for line in joined.splitlines() if line.strip())
    return commands


def test_the_section_marks_what_it_cannot_run_here() -> None:
    commands = section_commands()
    assert any(c.startswith("kubectl apply -k deploy/overlays/") for c in commands)
    for command in commands:
        if command.startswith("kubectl ") or command.startswith("make image"):
            assert skipped(command), command


@pytest.mark.parametrize("command", [c for c in section_commands() if not skipped(c)])
def test_every_runnable_command_works_as_written(command: str) -> None:
    if not (ROOT / ".venv" / "bin").is_dir():
        pytest.skip("the README's commands use .venv/bin (make creates it)")
    for tool in ("kubectl", "promtool"):
        if tool in command:
            require_tool(tool)
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
