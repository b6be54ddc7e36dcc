"""What an operator meets first: `--help` naming every setting, `globaldns config check`,
and one line — never a traceback — for a bad setting, a port in use or an unreachable
Redis. Each runs the real `globaldns` command in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from agents.settings import AgentSettings
from globaldns import config
from globaldns.redis_server import RedisProcess, free_port
from registry import auth
from registry import server as registry_server
from registry import topology as topology_mod
from registry.settings import RegistrySettings
from resolver.settings import ResolverSettings
from tests.devmode import EXE
from tests.helpers import TOPOLOGY_FILE

COMPONENTS: dict[str, type[BaseSettings]] = {
    "registry": RegistrySettings,
    "resolver": ResolverSettings,
    "agent": AgentSettings,
}


def environment(**settings: str) -> dict[str, str]:
    """This process's environment without any GLOBALDNS_* or REDIS_URL, plus ``settings``
    (so nothing falls back to a Redis on the default port of this machine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOBALDNS_")}
    env.pop("REDIS_URL", None)
    env.update({f"GLOBALDNS_{k.upper()}": v for k, v in settings.items()})
    return env


def globaldns(
    *args: str, cwd: Path | None = None, **settings: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=environment(**settings),
    )


def unreachable_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def one_line(text: str) -> str:
    """The one line the command says about what went wrong (log lines aside)."""
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith("globaldns")]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("component", COMPONENTS)
def test_help_lists_every_setting_with_its_variable_and_default(component: str) -> None:
    result = globaldns(component, "--help")
    assert result.returncode == 0, result.stderr
    cls = COMPONENTS[component]
    for field, info in cls.model_fields.items():
        line = next(
            (
                x
                for x in result.stdout.splitlines()
                if x.strip().startswith(f"GLOBALDNS_{field.upper()} ")
            ),
            None,
        )
        assert line is not None, f"GLOBALDNS_{field.upper()} missing from --help"
        assert "(default: " in line
        if info.description:
            assert info.description.split()[0] in result.stdout


def test_a_bad_setting_is_one_line_naming_the_variable_and_the_default() -> None:
    result = globaldns("resolver", dns_port="70000", redis_url=unreachable_redis())
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "GLOBALDNS_DNS_PORT='70000'" in line and "default: 5353" in line


def test_missing_required_settings_are_named() -> None:
    result = globaldns("agent")
    assert result.returncode == 2
    line = one_line(result.stderr)
    for name in ("GLOBALDNS_CLUSTER", "GLOBALDNS_TOKEN", "GLOBALDNS_SOURCE"):
        assert f"{name} is required" in line


def test_a_dns_port_in_use_names_the_port_and_the_setting(redis_url: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = globaldns(
            "resolver",
            dns_port=str(port),
            http_port=str(free_port()),
            redis_url=redis_url,
            log_json="false",
        )
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"port {port} (GLOBALDNS_DNS_PORT) is in use" in line
    assert "GLOBALDNS_DNS_PORT=PORT" in line
    assert "Traceback" not in result.stdout


def test_an_api_port_in_use_names_the_port_and_the_setting(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = globaldns("registry", port=str(port), redis_url=redis_url, log_json="false")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"port {port} (GLOBALDNS_PORT) is in use" in line
    assert "Traceback" not in result.stdout


def test_the_well_known_mdns_port_gets_a_hint() -> None:
    error = OSError(98, "Address already in use (127.0.0.1:5353/udp)")
    error.filename = "127.0.0.1:5353"
    line = config.describe_os_error(error, {5353: "GLOBALDNS_DNS_PORT"})
    assert line is not None and "mDNS" in line and "GLOBALDNS_DNS_PORT" in line


def test_an_unreachable_redis_is_one_line_and_the_registry_still_starts() -> None:
    url = unreachable_redis()
    process = subprocess.Popen(
        [EXE, "registry"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(redis_url=url, port=str(free_port()), log_json="false"),
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _out, rest = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            _out, rest = process.communicate()
    assert f"Redis at GLOBALDNS_REDIS_URL={url} is unreachable" in first
    assert "point GLOBALDNS_REDIS_URL at it" in first
    assert "Traceback" not in first + rest + _out


def test_config_check_passes_on_good_settings(redis_url: str) -> None:
    result = globaldns(
        "config",
        "check",
        "registry",
        "resolver",
        redis_url=redis_url,
        cluster_tokens='{"us-east-prod": "0123456789abcdef0"}',
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   registry: settings valid" in result.stdout
    assert "ok   resolver: settings valid" in result.stdout
    assert f"ok   registry: Redis at {redis_url} answers" in result.stdout
    # Two clusters of the topology have no token: a warning, not a failure.
    assert "no token for eu-west-prod, ap-south-prod" in result.stdout


def test_config_check_fails_naming_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "topology.yaml"
    bad.write_text("regions: {}\nclusters: {a: {region: nowhere}}\n")
    url = unreachable_redis()
    result = globaldns("config", "check", "registry", redis_url=url, topology=str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert any(str(bad) in line and "topology" in line for line in fails), result.stdout
    assert any("GLOBALDNS_REDIS_URL" in line and "unreachable" in line for line in fails)


def test_the_default_topology_is_found_from_any_directory(tmp_path: Path) -> None:
    result = globaldns("config", "check", "--no-redis", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok   topology {TOPOLOGY_FILE}" in result.stdout
    assert topology_mod.default_path().resolve() == TOPOLOGY_FILE


def test_a_registry_with_no_cluster_tokens_warns() -> None:
    topology = topology_mod.load(TOPOLOGY_FILE)
    (warning,) = registry_server.warnings(RegistrySettings(redis_url=unreachable_redis()), topology)
    assert "GLOBALDNS_CLUSTER_TOKENS is empty" in warning
    plain = {c.name: SecretStr(f"{c.name}-token-0123456789") for c in topology.clusters}
    (warning,) = registry_server.warnings(RegistrySettings(cluster_tokens=plain), topology)
    assert "stored as plain tokens; store their hashes" in warning
    hashed = {c: SecretStr(auth.hashed(t.get_secret_value())) for c, t in plain.items()}
    full = RegistrySettings(cluster_tokens=hashed)
    assert registry_server.warnings(full, topology) == []


def test_config_check_without_tokens_warns() -> None:
    result = globaldns("config", "check", "registry", "--no-redis")
    assert result.returncode == 0
    assert "warning: GLOBALDNS_CLUSTER_TOKENS is empty" in result.stdout


def test_redis_urls_are_redacted() -> None:
    assert config.redacted("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert config.redacted("redis://host:6379/0") == "redis://host:6379/0"


def test_no_setting_reaches_the_default_redis_of_this_machine() -> None:
    # The helpers above always pass GLOBALDNS_REDIS_URL or --no-redis; this guards it.
    assert "GLOBALDNS_REDIS_URL" not in environment()
    assert RedisProcess  # the suite's own servers only (tests/conftest.py)
