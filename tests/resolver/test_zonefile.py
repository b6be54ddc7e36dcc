"""The zone file renderer as a pure function; tests/resolver/test_knot.py serves its output."""

from __future__ import annotations

import dns.rdatatype
import dns.zone
import pytest
from pydantic import ValidationError

from registry.model import ClusterState, Endpoint, Service
from resolver.settings import ResolverSettings
from resolver.state import build
from resolver.zone import Zone
from resolver.zonefile import render
from tests.helpers import topology

NOW = 1_000_000


def cluster(name: str, region: str, *services: Service) -> ClusterState:
    return ClusterState(name=name, region=region, last_seen_ms=NOW, services=services)


def service(namespace: str, name: str, *addresses: str) -> Service:
    return Service(
        namespace=namespace,
        name=name,
        endpoints=tuple(Endpoint(address=a) for a in addresses),
    )


def rendered(zone: Zone, region: str | None, *clusters: ClusterState, generation: int = 7) -> str:
    snapshot = build(clusters, generation=generation, sync_ms=NOW, lease_ttl_ms=6000)
    return render(snapshot, zone, regions=topology().regions, region=region)


def records(text: str, origin: str = "global.example.com") -> dict[tuple[str, str], set[str]]:
    zone = dns.zone.from_text(text, origin=origin, relativize=False)
    return {
        (name.to_text(), dns.rdatatype.to_text(rdataset.rdtype)): {
            f"{rdataset.ttl} {rr.to_text()}" for rr in rdataset
        }
        for name, node in zone.nodes.items()
        for rdataset in node.rdatasets
    }


def test_the_zone_as_a_client_in_a_region_gets_it() -> None:
    zone = Zone(
        nameservers={
            "ns1.global.example.com": ("192.0.2.1", "2001:db8::1"),
            "ns.example.net": ("192.0.2.9",),  # outside the zone: no address written
        }
    )
    clusters = (
        cluster("us-east-prod", "us-east-1", service("production", "api", "10.1.0.1", "fd00::1")),
        cluster("eu-west-prod", "eu-west-1", service("production", "api", "10.2.0.1")),
    )
    assert records(rendered(zone, "eu-west-1", *clusters)) == {
        ("global.example.com.", "SOA"): {
            "5 ns1.global.example.com. hostmaster.global.example.com. 7 60 30 86400 5"
        },
        ("global.example.com.", "NS"): {"5 ns1.global.example.com.", "5 ns.example.net."},
        ("ns1.global.example.com.", "A"): {"5 192.0.2.1"},
        ("ns1.global.example.com.", "AAAA"): {"5 2001:db8::1"},
        # A from eu-west itself; AAAA only us-east has
        ("api.production.global.example.com.", "A"): {"5 10.2.0.1"},
        ("api.production.global.example.com.", "AAAA"): {"5 fd00::1"},
        # pinned names: one cluster's endpoints, wherever the client is
        ("us-east-prod.api.production.global.example.com.", "A"): {"5 10.1.0.1"},
        ("us-east-prod.api.production.global.example.com.", "AAAA"): {"5 fd00::1"},
        ("eu-west-prod.api.production.global.example.com.", "A"): {"5 10.2.0.1"},
    }
    assert records(rendered(zone, "us-east-1", *clusters))[
        "api.production.global.example.com.", "A"
    ] == {"5 10.1.0.1"}


def test_what_a_zone_file_cannot_say_is_a_comment() -> None:
    zone = Zone(name="Global.Example.COM.", nameservers={"api.production.global.example.com": ()})
    text = rendered(
        zone,
        None,
        cluster("us-east-prod", "us-east-1", service("production", "api", "10.1.0.1")),
        cluster("eu-west-prod", "eu-west-1", service("staging", "empty")),
        ClusterState(  # its lease never fresh: nothing healthy in it
            name="ap-south-prod",
            region="ap-south-1",
            services=(service("staging", "down", "10.3.0.1"),),
        ),
        generation=2**32 + 5,
    )
    assert "; api.production: answered as the nameserver of that name" in text
    nodata = "no address; the resolver answers NODATA, a zone file cannot hold an empty name"
    assert f"; empty.staging: {nodata}" in text
    assert f"; ap-south-prod.down.staging: {nodata}" in text
    assert records(text) == {
        ("global.example.com.", "SOA"): {
            "5 api.production.global.example.com. hostmaster.global.example.com. 5 60 30 86400 5"
        },
        ("global.example.com.", "NS"): {"5 api.production.global.example.com."},
        # shadowed by the nameserver, but its pinned name is not
        ("us-east-prod.api.production.global.example.com.", "A"): {"5 10.1.0.1"},
        # nothing healthy anywhere, nothing ever known good: every endpoint (fail open)
        ("down.staging.global.example.com.", "A"): {"5 10.3.0.1"},
    }


def test_odd_bytes_in_names_are_escaped() -> None:
    text = rendered(Zone(name="a;b.example", nameservers={"ns.a;b.example": ("192.0.2.1",)}), None)
    assert "a\\059b.example." in text
    # dnspython writes the same name as a\;b: both are the one byte ";" in the label
    assert records(text, origin="a\\059b.example")["ns.a\\;b.example.", "A"] == {"5 192.0.2.1"}


def test_nameserver_addresses_follow_the_endpoints_rules() -> None:
    """A zone index or a mapped address could be neither answered nor loaded from the
    file; refused when the settings are read, naming the setting. Loopback is fine."""
    for bad in ("fe80::1%eth0", "::ffff:192.0.2.1", "224.0.0.1"):
        with pytest.raises(ValidationError, match="nameservers") as caught:
            ResolverSettings(nameservers={"ns1.global.example.com": ("192.0.2.1", bad)})
        assert bad in str(caught.value)
    fine = ResolverSettings(nameservers={"ns1.global.example.com": ("127.0.0.1", "2001:DB8::1")})
    assert fine.nameservers == {"ns1.global.example.com": ("127.0.0.1", "2001:db8::1")}
