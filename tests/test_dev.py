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

from tests.devmode import NAME, Dev, a_records, dig, registered, start_dev, until

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


def test_drain_moves_europe_within_a_second(dev: Dev) -> None:
    europe = registered(dev, "eu-west-prod")
    us = registered(dev, "us-east-prod")
    assert a_records(dig(dev, NAME, source="127.0.2.1")) == europe
    dev.cli("drain", "eu-west-prod", "--reason", "e2e test")
    shift = until(lambda: a_records(dig(dev, NAME, source="127.0.2.1")) == us, 1.0)
    dev.cli("undrain", "eu-west-prod")
    back = until(lambda: a_records(dig(dev, NAME, source="127.0.2.1")) == europe, 1.0)
    print(f"drain shift {shift:.3f}s, undrain {back:.3f}s")


def test_outage_moves_europe_within_fall_time_plus_one_second(dev: Dev) -> None:
    europe = registered(dev, "eu-west-prod")
    us = registered(dev, "us-east-prod")
    fall_time = 2 * 0.5  # fall=2 probes, 0.5 s apart (deploy/examples/static)
    dev.cli("dev", "outage", "eu-west-prod")
    shift = until(lambda: a_records(dig(dev, NAME, source="127.0.2.1")) == us, fall_time + 1)
    dev.cli("dev", "recover", "eu-west-prod")
    back = until(lambda: a_records(dig(dev, NAME, source="127.0.2.1")) == europe, 2 * 0.5 + 1)
    print(f"outage shift {shift:.3f}s, recovery {back:.3f}s")


def test_killing_valkey_breaks_nothing(dev: Dev) -> None:
    europe = registered(dev, "eu-west-prod")
    old_pid = dev.state["redis_pid"]
    heartbeat = 2.0

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
    while healed is None or time.monotonic() - killed < 3:
        result = dig(dev, NAME, source="127.0.2.1")
        statuses.add(result.status)
        assert a_records(result) == europe
        now = time.monotonic()
        if restarted is None:
            if json.loads(dev.state_file.read_text())["redis_pid"] != old_pid:
                restarted = now
        elif healed is None and whole():
            healed = now
        assert now - killed < 10, "the registry did not heal"
    assert statuses == {"NOERROR"}
    assert restarted is not None and healed is not None
    back, whole_after = restarted - killed, healed - restarted
    print(f"valkey back after {back:.3f}s, registry whole {whole_after:.3f}s later")
    assert healed - restarted <= heartbeat + 0.3
