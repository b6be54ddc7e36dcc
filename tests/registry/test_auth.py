"""Identity and transport: hashed tokens, two per role while rotating, a read token,
explain for other clients only with the admin token, TLS to the registry, and what the
CLI sends its admin token to. Real registry, resolver and Redis; real TLS."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.edns
import dns.message
import pytest
from pydantic import SecretStr

from agents.reporter import RegistryClient, Unavailable
from registry import auth
from registry.http import client_tls
from registry.model import Report
from tests.agents.apiserver import make_tls
from tests.helpers import ADMIN, TOKENS, registry, resolver
from tests.registry.test_api import call, report

US = TOKENS["us-east-prod"]
READER = "reader-token-0123456789abcdef"


# -- the pure part ----------------------------------------------------------------------


def test_a_token_matches_its_hash_and_its_plain_form() -> None:
    new = auth.new()
    tokens = auth.Tokens.from_config(
        {"us-east-prod": [auth.hashed(new)], "eu-west-prod": ["eu-west-plain-token-123"]},
        admin=[auth.hashed("admin-token-0123456789")],
    )
    assert tokens.cluster(new) == "us-east-prod"
    assert tokens.cluster("eu-west-plain-token-123") == "eu-west-prod"
    assert tokens.cluster(auth.hashed(new)) is None  # the hash is not a credential
    assert tokens.is_admin("admin-token-0123456789") and not tokens.is_admin(new)
    assert tokens.may_read(None)  # no read token configured: inspection is open


def test_two_tokens_per_role_while_rotating_and_no_more() -> None:
    old, new = auth.new(), auth.new()
    tokens = auth.Tokens.from_config({"c": [auth.hashed(old), auth.hashed(new)]})
    assert tokens.cluster(old) == tokens.cluster(new) == "c"
    with pytest.raises(ValueError, match="at most 2 tokens"):
        auth.Tokens.from_config({"c": [auth.new(), auth.new(), auth.new()]})


@pytest.mark.parametrize(
    ("clusters", "admin", "message"),
    [
        ({"c": ["short"]}, [], r"GLOBALDNS_CLUSTER_TOKENS\[c\]: a token needs at least 16"),
        ({"c": ["sha256:abc"]}, [], "a hashed token is sha256: and 64"),
        ({"c": ["same-token-0123456789"]}, ["same-token-0123456789"], "share a token"),
        ({"a": ["same-token-0123456789"], "b": ["same-token-0123456789"]}, [], "share a token"),
    ],
)
def test_bad_token_settings_name_the_setting(
    clusters: dict[str, list[str]], admin: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        auth.Tokens.from_config(clusters, admin=admin)


def test_settings_take_one_token_or_two() -> None:
    from registry.settings import RegistrySettings

    env = {
        "GLOBALDNS_ADMIN_TOKEN": f"{auth.hashed('a' * 20)}, {'b' * 20}",
        "GLOBALDNS_CLUSTER_TOKENS": json.dumps({"c1": "c" * 20, "c2": ["d" * 20, "e" * 20]}),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        tokens = RegistrySettings().tokens()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert tokens.is_admin("a" * 20) and tokens.is_admin("b" * 20)
    assert tokens.cluster("c" * 20) == "c1"
    assert tokens.cluster("d" * 20) == tokens.cluster("e" * 20) == "c2"


# -- the registry -----------------------------------------------------------------------


async def test_hashed_tokens_and_rotation_at_the_registry(redis_url: str) -> None:
    old, new = TOKENS["us-east-prod"], auth.new()
    hashed = {c: (SecretStr(auth.hashed(t)),) for c, t in TOKENS.items()}
    hashed["us-east-prod"] = (SecretStr(auth.hashed(old)), SecretStr(auth.hashed(new)))
    async with (
        registry(
            redis_url, cluster_tokens=hashed, admin_token=(SecretStr(auth.hashed(ADMIN)),)
        ) as api,
        aiohttp.ClientSession() as s,
    ):
        assert (await call(s, "POST", f"{api}/v1/reports", old, report(1)))[0] == 200
        assert (await call(s, "POST", f"{api}/v1/reports", new, report(2)))[0] == 200
        status, body = await call(s, "POST", f"{api}/v1/reports", auth.hashed(old), report(3))
        assert status == 401 and body["error"] == "unknown token"
        status, _ = await call(s, "DELETE", f"{api}/v1/clusters/us-east-prod/drain", ADMIN)
        assert status == 200


async def test_a_read_token_guards_the_inspection_routes(redis_url: str) -> None:
    async with (
        registry(redis_url, read_token=(SecretStr(READER),)) as api,
        aiohttp.ClientSession() as s,
    ):
        await call(s, "POST", f"{api}/v1/reports", US, report(1))
        for path in ("/v1/clusters", "/v1/services", "/v1/services/production/api", "/v1/drains"):
            for token, expected in ((None, 401), (US, 401), (READER, 200), (ADMIN, 200)):
                status, body = await call(s, "GET", f"{api}{path}", token)
                assert status == expected, (path, token, body)
                if status == 401:
                    assert "read (or admin) bearer token" in body["error"]
        # Writing still needs the admin token; the read token cannot drain.
        status, _ = await call(s, "POST", f"{api}/v1/clusters/us-east-prod/drain", READER, {})
        assert status == 401
        for probe in ("/healthz", "/metrics"):
            async with s.get(f"{api}{probe}") as response:
                assert response.status == 200


async def test_a_non_utf8_authorization_header_is_a_401(redis_url: str) -> None:
    async with registry(redis_url) as api:
        host, port = api.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                b"GET /v1/grants HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer \xff\xfe\xfa-token\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            answer = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b'"unknown token"' in answer


# -- explain ----------------------------------------------------------------------------


async def test_explain_for_another_client_needs_the_admin_token(redis_url: str) -> None:
    async with opened_world(redis_url) as (api, bound), aiohttp.ClientSession() as s:
        base = f"http://127.0.0.1:{bound.http_port}/v1/explain"
        other = f"{base}?name=api.production.global.example.com&client=127.0.2.9"
        own = f"{base}?name=api.production.global.example.com"
        status, body = await call(s, "GET", other)
        assert status == 401 and "admin bearer token" in body["error"]
        assert (await call(s, "GET", other, US))[0] == 401
        status, body = await call(s, "GET", other, ADMIN)
        assert status == 200 and body["client"] == "127.0.2.9"
        status, body = await call(s, "GET", own)  # the caller itself, from loopback: trusted
        assert status == 200, body
        subnet = f"{own}&subnet=127.0.3.0/24"
        assert (await call(s, "GET", subnet))[0] == 401
        # Through the registry: the operator's token is required and passed on.
        via = f"{api}/v1/explain?name=api.production.global.example.com&client=127.0.2.9"
        assert (await call(s, "GET", via))[0] == 401
        status, body = await call(s, "GET", via, ADMIN)
        assert status == 200 and body["client"] == "127.0.2.9"


async def test_a_caller_outside_explain_trusted_is_refused(redis_url: str) -> None:
    async with (
        resolver(redis_url, wait_for_sync=False, explain_trusted=("10.0.0.0/8",)) as bound,
        aiohttp.ClientSession() as s,
    ):
        url = (
            f"http://127.0.0.1:{bound.http_port}/v1/explain?name=api.production.global.example.com"
        )
        status, body = await call(s, "GET", url)
        assert status == 403 and "GLOBALDNS_EXPLAIN_TRUSTED" in body["error"]


class opened_world:
    """A registry (asking the resolver for explain) and a resolver with the admin token."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url

    async def __aenter__(self) -> tuple[str, object]:
        from contextlib import AsyncExitStack

        self.stack = AsyncExitStack()
        bound = await self.stack.enter_async_context(
            resolver(
                self.redis_url,
                wait_for_sync=False,
                admin_token=(SecretStr(auth.hashed(ADMIN)),),
            )
        )
        api = await self.stack.enter_async_context(
            registry(self.redis_url, resolver_url=f"http://127.0.0.1:{bound.http_port}")
        )
        return api, bound

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.aclose()


# -- client subnet ----------------------------------------------------------------------


async def test_a_client_subnet_is_ignored_unless_its_source_is_trusted(redis_url: str) -> None:
    """By default nobody may claim to ask from elsewhere; a configured source may."""
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        await call(s, "POST", f"{api}/v1/reports", US, report(1, "10.0.0.1"))
        await call(s, "POST", f"{api}/v1/reports", TOKENS["ap-south-prod"], report(1, "10.0.3.1"))
    query = dns.message.make_query(
        "api.production.global.example.com",
        "A",
        use_edns=0,
        options=[dns.edns.ECSOption("127.0.3.0", 24)],
    )
    async with resolver(redis_url) as bound:
        reply = await dns.asyncquery.udp(query, "127.0.0.1", port=bound.dns_port, timeout=5)
        assert {rr.address for rrset in reply.answer for rr in rrset} == {"10.0.0.1"}
    async with resolver(redis_url, ecs_trusted=("127.0.0.0/8",)) as bound:
        reply = await dns.asyncquery.udp(query, "127.0.0.1", port=bound.dns_port, timeout=5)
        assert {rr.address for rrset in reply.answer for rr in rrset} == {"10.0.3.1"}


# -- TLS --------------------------------------------------------------------------------


async def test_agents_reach_a_tls_registry_and_verify_it(redis_url: str, tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "pki")
    async with (
        registry(redis_url, tls_cert_file=tls.cert, tls_key_file=tls.key) as api,
        aiohttp.ClientSession() as session,
    ):
        https = api.replace("http://", "https://")
        trusting = RegistryClient(session, https, US, tls=client_tls(tls.ca))
        assert await trusting.report(Report.model_validate(report(1))) >= 1
        assert await trusting.heartbeat(1)
        # Without the CA the certificate is not trusted; over plain HTTP nothing answers.
        with pytest.raises(Unavailable, match=r"[Cc]ertificate"):
            await RegistryClient(session, https, US).heartbeat(1)
        with pytest.raises(Unavailable):
            await RegistryClient(session, api, US, timeout_s=2).heartbeat(1)


# -- the CLI's admin token --------------------------------------------------------------


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    from tests.test_operator import globaldns

    return globaldns(*args, **{k.removeprefix("GLOBALDNS_").lower(): v for k, v in env.items()})


def test_the_cli_reads_its_token_file_only_if_private(tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN)
    token_file.chmod(0o644)
    env = {"GLOBALDNS_ADMIN_TOKEN_FILE": str(token_file), "GLOBALDNS_API_URL": "http://127.0.0.1:9"}
    result = _cli(env, "undrain", "us-east-prod")
    assert result.returncode == 2
    assert "must be a file of yours with mode 0600" in result.stderr


def test_a_state_file_cannot_send_the_token_off_loopback(tmp_path: Path) -> None:
    """A state file naming a remote API (planted, or from elsewhere) is not used: the
    CLI falls back to the local default, and sends no token it found there."""
    state = tmp_path / "dev.json"
    state.write_text('{"api_url": "http://192.0.2.1:8080", "admin_token": "stolen-admin-0123"}')
    state.chmod(0o600)
    result = _cli({}, "--state-file", str(state), "undrain", "us-east-prod")
    assert "192.0.2.1" not in result.stdout + result.stderr
    assert "127.0.0.1:8080" in result.stderr
