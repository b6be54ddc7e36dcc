"""Routing policies, explain and safe drains through the real resolver in dev mode."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator

import dns.message
import dns.query
import pytest

from tests.devmode import EXE, Dev, dig, start_dev, until

pytestmark = pytest.mark.e2e

ZONE = "production.global.example.com"
PREFIX = {"127.10": "us-east-prod", "127.20": "eu-west-prod", "127.30": "ap-south-prod"}


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    yield from start_dev(tmp_path_factory)


def ask(dev: Dev, name: str, source: str = "127.0.0.1") -> list[str]:
    q = dns.message.make_query(f"{name}.{ZONE}", "A")
    reply = dns.query.udp(
        q, dev.state["dns_host"], port=dev.state["dns_port"], source=source, timeout=10
    )
    return [r.to_text() for rrset in reply.answer for r in rrset]


def clusters_of(addresses: list[str]) -> set[str]:
    return {PREFIX[".".join(a.split(".")[:2])] for a in addresses}


def set_policy(dev: Dev, service: str, policy: dict[str, object]) -> None:
    dev.cli("policy", "set", f"production/{service}", json.dumps(policy), "--reason", "test")


def explained(dev: Dev, service: str, client: str) -> set[str]:
    out = dev.cli("explain", f"{service}.{ZONE}", "--client", client, "--json")
    return set(json.loads(out)["rotated_among"])


def txt_explained(dev: Dev, service: str, source: str) -> set[str]:
    result = dig(dev, f"_explain.{service}.{ZONE}", "TXT", source=source)
    first = result.answers[0][3].split('" "')[0].strip('"')
    answer = first.split()[0].removeprefix("answer=")
    return set() if answer == "-" else set(answer.split(","))


def agree(dev: Dev, service: str, source: str) -> set[str]:
    """The answer, checked against both explanations; returns the answer."""
    answer = set(ask(dev, service, source))
    assert explained(dev, service, source) == answer
    assert txt_explained(dev, service, source) == answer
    return answer


def test_weighted_95_5_over_1000_subnets_is_sticky(dev: Dev) -> None:
    set_policy(dev, "web", {"kind": "weighted", "weights": {"us-east-prod": 95, "eu-west-prod": 5}})
    try:
        until(
            lambda: (
                clusters_of(ask(dev, "web", "127.0.2.1")) <= {"us-east-prod", "eu-west-prod"}
                and len(clusters_of(ask(dev, "web", "127.0.2.1"))) == 1
            ),
            "the weighted policy in effect",
        )
        sides: dict[str, set[str]] = defaultdict(set)
        wire = dns.message.make_query(f"web.{ZONE}", "A").to_wire()
        server = (dev.state["dns_host"], dev.state["dns_port"])
        for i in range(1000):
            source = f"127.{100 + i // 250}.{i % 250}.1"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((source, 0))
                sock.settimeout(10)  # RRL is off in dev mode: only a hang guard
                for _ in range(10):
                    sock.sendto(wire, server)
                    reply = dns.message.from_wire(sock.recv(4096))
                    sides[source] |= clusters_of([r.to_text() for s in reply.answer for r in s])
        assert all(len(side) == 1 for side in sides.values()), "a subnet changed sides"
        shares = Counter(next(iter(side)) for side in sides.values())
        heavy = shares["us-east-prod"] / 1000
        assert 0.93 <= heavy <= 0.97, shares
        for source in ("127.100.0.1", "127.101.7.1"):
            agree(dev, "web", source)
    finally:
        dev.cli("policy", "clear", "production/web")


def test_failover_follows_its_list(dev: Dev) -> None:
    order = ["eu-west-prod", "ap-south-prod", "us-east-1"]
    set_policy(dev, "data-processing", {"kind": "failover", "order": order})
    now = lambda: clusters_of(ask(dev, "data-processing"))  # noqa: E731
    try:
        until(lambda: now() == {"eu-west-prod"}, "first in the list answers")
        agree(dev, "data-processing", "127.0.0.1")
        dev.cli("dev", "outage", "eu-west-prod")
        until(lambda: now() == {"ap-south-prod"}, "failover to the second")
        agree(dev, "data-processing", "127.0.0.1")
        dev.cli("dev", "outage", "ap-south-prod")
        until(lambda: now() == {"us-east-prod"}, "failover to the third")
        agree(dev, "data-processing", "127.0.0.1")
        dev.cli("dev", "recover", "eu-west-prod")
        until(lambda: now() == {"eu-west-prod"}, "back to the first")
    finally:
        dev.cli("dev", "recover", "eu-west-prod")
        dev.cli("dev", "recover", "ap-south-prod")
        dev.cli("policy", "clear", "production/data-processing")


def test_residency_never_leaves_europe(dev: Dev) -> None:
    set_policy(dev, "api", {"kind": "residency"})
    europe = "127.0.2.1"
    try:
        until(lambda: clusters_of(ask(dev, "api", europe)) == {"eu-west-prod"}, "residency")
        assert clusters_of(ask(dev, "api", "127.0.1.1")) == {"us-east-prod"}
        agree(dev, "api", europe)
        dev.cli("dev", "outage", "eu-west-prod")
        seen = []
        for _ in range(150):  # through the outage and past it: Europe or nothing
            seen.append(frozenset(clusters_of(ask(dev, "api", europe))))
            if seen[-1] == frozenset():
                break
        assert set(seen) <= {frozenset({"eu-west-prod"}), frozenset()}
        until(lambda: ask(dev, "api", europe) == [], "an empty answer in the outage")
        for _ in range(30):
            assert ask(dev, "api", europe) == []
        result = dig(dev, f"api.{ZONE}", "A", source=europe)
        assert result.status == "NOERROR" and not result.answers
        agree(dev, "api", europe)
        dev.cli("dev", "recover", "eu-west-prod")
        until(lambda: clusters_of(ask(dev, "api", europe)) == {"eu-west-prod"}, "Europe back")
    finally:
        dev.cli("dev", "recover", "eu-west-prod")
        dev.cli("policy", "clear", "production/api")


def test_geo_and_all_answers_agree_with_explain(dev: Dev) -> None:
    for source in ("127.0.1.1", "127.0.2.1", "127.0.3.1", "127.0.0.1"):
        agree(dev, "api", source)
    set_policy(dev, "web", {"kind": "all"})
    try:
        until(lambda: len(clusters_of(ask(dev, "web"))) == 3, "all three clusters")
        assert agree(dev, "web", "127.0.2.1") == set(ask(dev, "web", "127.0.1.1"))
    finally:
        dev.cli("policy", "clear", "production/web")


def test_draining_the_last_healthy_cluster_needs_force(dev: Dev) -> None:
    try:
        dev.cli("drain", "eu-west-prod", "--reason", "test")
        dev.cli("drain", "--region", "ap-south-1", "--reason", "test")
        dry = dev.cli("drain", "us-east-prod", "--dry-run", "--force")
        assert "STRANDED" in dry
        refused = subprocess.run(
            [EXE, "--state-file", str(dev.state_file), "drain", "us-east-prod"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert refused.returncode == 1 and "refused" in refused.stderr
        assert "production/api" in refused.stderr
        status = dev.cli("status")
        assert "eu-west-prod" in status and "draining" in status
        forced = dev.cli("drain", "us-east-prod", "--force", "--reason", "all out")
        assert "drained us-east-prod" in forced
        # Every cluster drained: the services' all-unhealthy choice answers (default:
        # the endpoints last known good), never an empty answer by accident.
        assert ask(dev, "api") != []
        metrics = urllib.request.urlopen(dev.state["resolver_url"] + "/metrics").read().decode()
        assert 'globaldns_resolver_all_unhealthy_answers_total{choice="last_known_good"}' in metrics
        assert "globaldns_resolver_services_all_unhealthy 3.0" in metrics
        assert 'all_unhealthy_answers_total{choice="last_known_good"} 0.0' not in metrics
    finally:
        for cluster in ("us-east-prod", "eu-west-prod", "ap-south-prod"):
            dev.cli("undrain", cluster)
    assert dig(dev, f"api.{ZONE}", "A").status == "NOERROR"
