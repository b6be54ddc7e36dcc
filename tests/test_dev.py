"""`globaldns dev` as a new user runs it, checked with dig and curl's equivalent.

This is the walking skeleton's acceptance test: the whole system in a subprocess, asked
from the outside only (dig over UDP and TCP, the HTTP API, the CLI), with failover by
drain, by endpoint outage and through a killed Valkey.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.devmode import HANG_GUARD_S, NAME, Dev, a_records, dig, moves, registered, start_dev

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    yield from start_dev(tmp_path_factory)


def test_dig_answers_authoritatively_over_udp_and_tcp(dev: Dev) -> None:
    for extra in ([], ["+tcp"]):
        result = dig(dev, *extra, NAME, "A")
        assert result.status == "NOERROR"
        assert "aa" in result.flags and "ra" not in result.flags
        assert a_records(result)
        assert all(ttl <= 5 for _o, ttl, _r, _d in result.answers)


@pytest.mark.parametrize(
    ("source", "cluster"),
    [("127.0.1.1", "us-east-prod"), ("127.0.2.1", "eu-west-prod"), ("127.0.3.1", "ap-south-prod")],
)
def test_clients_get_their_regions_endpoints(dev: Dev, source: str, cluster: str) -> None:
    assert a_records(dig(dev, NAME, "A", source=source)) == registered(dev, cluster)


def test_negative_answers_and_refusals(dev: Dev) -> None:
    nx = dig(dev, "nope.production.global.example.com", "A")
    assert nx.status == "NXDOMAIN" and "aa" in nx.flags
    assert [r[2] for r in nx.authority] == ["SOA"]
    nodata = dig(dev, NAME, "MX")
    assert nodata.status == "NOERROR" and not nodata.answers
    assert [r[2] for r in nodata.authority] == ["SOA"]
    refused = dig(dev, "example.org", "A")
    assert refused.status == "REFUSED" and "aa" not in refused.flags


# The two failover tests print how long each move took (run with -s); they assert that
# European clients move to us-east and back. A drain is one registry write: the answer
# moves straight. An outage is seen by probes, endpoint by endpoint (recovery may see
# one listener up a probe round before the next), so it may pass through part of a set.


def test_drain_moves_europe_and_undrain_brings_it_back(dev: Dev) -> None:
    europe = registered(dev, "eu-west-prod")
    us = registered(dev, "us-east-prod")
    assert a_records(dig(dev, NAME, source="127.0.2.1")) == europe
    dev.cli("drain", "eu-west-prod", "--reason", "e2e test")
    shift = moves(dev, "127.0.2.1", europe, us)
    dev.cli("undrain", "eu-west-prod")
    back = moves(dev, "127.0.2.1", us, europe)
    print(f"drain shift {shift:.3f}s, undrain {back:.3f}s")


def test_outage_moves_europe_and_recovery_brings_it_back(dev: Dev) -> None:
    europe = registered(dev, "eu-west-prod")
    us = registered(dev, "us-east-prod")
    assert a_records(dig(dev, NAME, source="127.0.2.1")) == europe
    dev.cli("dev", "outage", "eu-west-prod")
    shift = moves(dev, "127.0.2.1", europe, us, straight=False)
    dev.cli("dev", "recover", "eu-west-prod")
    back = moves(dev, "127.0.2.1", us, europe, straight=False)
    print(f"outage shift {shift:.3f}s, recovery {back:.3f}s")


def test_killing_valkey_breaks_nothing(dev: Dev) -> None:
    europe = registered(dev, "eu-west-prod")
    old_pid = dev.state["redis_pid"]

    def whole() -> bool:
        try:
            clusters = dev.get("/v1/clusters")["clusters"]
        except OSError:
            return False
        return all(c["services"] == 3 and c["lease_fresh"] for c in clusters)

    os.kill(old_pid, signal.SIGKILL)
    killed = time.monotonic()
    restarted = healed = None
    statuses = set()
    after_healed = 0
    # Ask all through the outage, and 20 times more once the registry is whole again:
    # every answer is Europe's. Times are printed (-s), never asserted.
    while after_healed < 20:
        result = dig(dev, NAME, source="127.0.2.1")
        statuses.add(result.status)
        assert a_records(result) == europe
        now = time.monotonic()
        if restarted is None:
            if json.loads(dev.state_file.read_text())["redis_pid"] != old_pid:
                restarted = now
        elif healed is None:
            if whole():
                healed = now
        else:
            after_healed += 1
        assert now - killed < HANG_GUARD_S, "the registry did not heal (hang guard)"
    assert statuses == {"NOERROR"}
    assert restarted is not None and healed is not None
    back, whole_after = restarted - killed, healed - restarted
    print(f"valkey back after {back:.3f}s, registry whole {whole_after:.3f}s later")
