"""The Dockerfile: linted by hadolint, and shaped as the deployment needs it (multi-stage,
non-root, the globaldns entry point, uvloop). Building it needs a container daemon and a
base image (`make image`); what can be checked without one is checked here."""

from __future__ import annotations

import subprocess
import tomllib

from tests.conftest import require_tool
from tests.helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_hadolint_finds_nothing() -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_the_image_is_built_in_one_stage_and_run_from_another() -> None:
    stages = [args for word, args in instructions() if word == "FROM"]
    assert len(stages) == 2 and " AS " in stages[0].upper()
    copies = [args for word, args in final_stage() if word == "COPY"]
    assert any(args.startswith("--from=build /opt/globaldns") for args in copies), copies


def test_it_runs_as_a_numeric_non_root_user() -> None:
    users = [args for word, args in final_stage() if word == "USER"]
    assert users, "the final stage names no USER: it would run as root"
    user, _, group = users[-1].partition(":")
    # Numeric, so that runAsNonRoot can verify it without reading /etc/passwd.
    assert user.isdigit() and int(user) != 0 and group.isdigit() and int(group) != 0


def test_the_entry_point_is_globaldns_with_uvloop() -> None:
    steps = dict(final_stage())
    assert steps["ENTRYPOINT"] == '["globaldns"]'
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "globaldns" in scripts
    installs = [args for word, args in instructions() if word == "RUN" and "pip install" in args]
    assert any("'.[fast]'" in args for args in installs), "uvloop comes with the fast extra"


def test_nothing_is_written_at_run_time() -> None:
    env = " ".join(args for word, args in final_stage() if word == "ENV")
    # No bytecode written next to the (read-only) code; logs are not buffered.
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, args in instructions():
        if word != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
            assert (ROOT / source).exists(), source
